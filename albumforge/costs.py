"""What the real models cost on one V100 (16 GB, fp16): the ``sim`` engine's table.

The ``sim`` engine (``actors.sim``) loads nothing and sleeps for these costs, so a run on
a cluster of logical GPUs shows how the pipeline *schedules* real work: batch sizes,
block sizes, pool shapes, planner lead. It is a scheduling model, never a test of a model.

Every figure is in modelled V100 seconds. Where each comes from:

* **SD 1.5** (measured, published; FIELD-NOTES "V100 facts"): 512x512, fp16, 50 steps,
  guidance on, on a Titan RTX (V100-class): 3.6 s an image, 2.6 s with memory-efficient
  attention. So one denoising step of one image costs 3.6 / 50 = 0.072 s. *Estimate*:
  the split into a per-call part (0.004 s a step: scheduler, launches) and a per-image
  part (0.065 s a step) that scales with pixels / 512^2 (UNet compute grows with the
  latent's area), and 0.15 s of VAE decode per 512^2 image: 50 x 0.069 + 0.15 = 3.6 s.
* **MusicGen** (published: small 300M, medium 1.5B, large 3.3B parameters; 50 decoder
  steps per second of audio, FIELD-NOTES). The step times are *estimates*: a decoder
  step at batch 1 is bound by kernel launches and by reading the weights (fp16 weights
  / ~450 GB/s effective HBM2 bandwidth: 0.7, 3.3, 7.3 ms), so the launch-bound floor of
  24 / 48 / 48 transformer layers dominates: ~20 / 38 / 45 ms. Each further sequence in
  the batch adds its FLOPs (2 x params per token, at ~30 fp16 TFLOP/s effective):
  0.02 / 0.1 / 0.22 ms; guidance doubles the sequences. EnCodec decoding: ~3 ms per
  second of audio per track. A 30 s window of medium with guidance is then ~57 s at
  batch 1 and ~59 s at batch 8: decoding is latency-bound, so batches are nearly free.
* **Loads** (*estimates*: fp16 safetensors from a local NVMe cache at ~1 GB/s plus
  model construction and the move to the card).
* **LLM director** (*estimate*, for gpt-4o-mini-class hosted models): 0.5 s to the first
  token, then ~70 output tokens/s; an album plan is ~300 tokens plus ~110 per track.

No V100 was lent while this table was written: replace the estimates with measured ones
(a real run's ``gen_s`` per batch size and window, ``albumforge stats``) when one is.
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_GPU = "V100-16GB"


@dataclass(frozen=True)
class MusicCost:
    """One MusicGen checkpoint on a V100: seconds per decoder step, per load."""

    params: float  # published parameter count
    step_s: float  # one decoder step at batch 1 without guidance (estimate)
    step_per_seq_s: float  # each further sequence in the batch (guidance counts twice) (estimate)
    decode_s_per_audio_s: float  # EnCodec decoding, per second of audio per track (estimate)
    load_s: float  # from a local cache onto the card (estimate)

    def window_s(self, steps: int, prompt_frames: int, batch: int, frame_rate: int, guidance: bool) -> float:
        """One generate() call: ``steps`` decoder steps (new frames plus the delay pattern's)
        for ``batch`` tracks after a prompt of ``prompt_frames`` codes (prefilled in one
        step), then EnCodec decoding of prompt and new frames."""
        seqs = batch * (2 if guidance else 1)
        step = self.step_s + self.step_per_seq_s * max(0, seqs - 1)
        decode = self.decode_s_per_audio_s * (prompt_frames + steps) / frame_rate * batch
        return (steps + (1 if prompt_frames else 0)) * step + decode


@dataclass(frozen=True)
class ImageCost:
    """A Stable Diffusion 1.x pipeline on a V100."""

    step_call_s: float  # per denoising step, per call (estimate)
    step_image_s: float  # per denoising step, per 512x512 image, guidance on (published 3.6 s / 50 less the call part)
    vae_s: float  # VAE decoding per 512x512 image (estimate)
    load_s: float  # (estimate)

    def call_s(self, steps: int, batch: int, width: int, height: int, guidance: bool) -> float:
        area = width * height / (512 * 512)
        per_image = self.step_image_s * area * (1.0 if guidance else 0.5)
        return steps * (self.step_call_s + per_image * batch) + self.vae_s * area * batch


@dataclass(frozen=True)
class LlmCost:
    """The director's request latency for one album plan."""

    first_token_s: float
    tokens_per_s: float
    tokens_per_album: int
    tokens_per_track: int

    def plan_s(self, tracks: int) -> float:
        return self.first_token_s + (self.tokens_per_album + self.tokens_per_track * tracks) / self.tokens_per_s


# keyed like ray_jobs.placement.MUSIC_MEMORY_GB: the model id's last part
MUSIC: dict[str, MusicCost] = {
    "musicgen-small": MusicCost(params=300e6, step_s=0.020, step_per_seq_s=0.00002, decode_s_per_audio_s=0.003,
                                load_s=4.0),
    "musicgen-medium": MusicCost(params=1.5e9, step_s=0.038, step_per_seq_s=0.0001, decode_s_per_audio_s=0.003,
                                 load_s=9.0),
    "musicgen-large": MusicCost(params=3.3e9, step_s=0.045, step_per_seq_s=0.00022, decode_s_per_audio_s=0.003,
                                load_s=16.0),
    "musicgen-melody": MusicCost(params=1.5e9, step_s=0.040, step_per_seq_s=0.0001, decode_s_per_audio_s=0.003,
                                 load_s=10.0),
}
# SD 1.x: 3.6 s for 50 steps at 512^2 = 0.072 s a step = 0.004 (call) + 0.068 (image)
IMAGE = ImageCost(step_call_s=0.004, step_image_s=0.068 - 0.15 / 50, vae_s=0.15, load_s=6.0)
LLM = LlmCost(first_token_s=0.5, tokens_per_s=70.0, tokens_per_album=300, tokens_per_track=110)


def music_cost(model_id: str) -> MusicCost:
    """The table row of a MusicGen id or folder (by its last part); a named error otherwise."""
    name = str(model_id).rstrip("/").rsplit("/", 1)[-1]
    if name not in MUSIC:
        raise ValueError(f"music.model_id={model_id!r}: the sim engine has no cost for it (known: {sorted(MUSIC)})")
    return MUSIC[name]
