"""MusicActor: MusicGen held warm; generates a whole batch of tracks per call.

Tracks longer than one window follow audiocraft's ``extend_stride``: the first window is
``window_s`` long; each further one is a generate() call whose decoder prompt is the last
``window_s - stride_s`` seconds of the track *as audio codes* (``decoder_input_ids``: no
re-encoding, the exact tokens the model sampled) and which adds up to ``stride_s`` new
seconds. The call's output includes the prompt's audio again, so consecutive windows
overlap by the context; they are joined with a crossfade inside it (``actors.audio``).
The batch runs in lockstep: every window is one call for all tracks still short of their
duration; a track that is long enough leaves the batch, so none is generated past its
last window (each is trimmed to its exact length at the end).

transformers' MusicGen generate() returns only decoded audio (``sequences`` too holds audio
with ``return_dict_in_generate``; the ``streamer`` is not forwarded to the sampling loop in
5.x), so the codes are read from the decoder's own token matrix through a no-op
``StoppingCriteria`` (public API: it sees ``input_ids`` after every step) and un-delayed
with MusicGen's delay pattern: codebook k of frame f sits at position 1 + f + k.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import StoppingCriteria, StoppingCriteriaList

from actors.audio import crossfade, master, write_audio
from actors.engines import load_music
from actors.faults import GuardedStage
from actors.jobs import worker_info, writable
from albumforge.atomic import WriteError
from albumforge.rows import KIND_TRACK, STATUS_OK, media_dir

if TYPE_CHECKING:  # the section type only
    from albumforge.config import MusicConfig


# Attention kernels for generate(): every backend but cuDNN's. Each decoding step has a new key
# length, and cuDNN attention (fp16/bf16, sm_80 and later: not V100) builds a plan for each shape
# the first time it sees one: on an H100 with the tiny model, 38-46 ms a step on the first call
# of a length against 3-4 ms once cached (fp32, which never takes cuDNN: 4.7 ms).
_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class _LastTokens(StoppingCriteria):
    """Never stops generation; keeps the decoder's token matrix after the last step."""

    def __init__(self):
        self.ids = None

    def __call__(self, input_ids, scores, **kwargs):
        self.ids = input_ids
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def undelay(ids: torch.Tensor, batch: int, num_codebooks: int, channels: int, prompt: int, frames: int) -> torch.Tensor:
    """(batch, codebooks, frames) codes of the ``frames`` frames generated after a prompt of
    ``prompt`` frames, from the delayed (batch * codebooks, 1 + prompt + steps) tokens.

    transformers' ``build_delay_pattern_mask``: position 0 is the start token, codebook k is
    delayed by k steps (stereo: codebook pair k by k), so frame f of codebook k is at 1 + f + k.
    """
    full = ids.reshape(batch, num_codebooks, -1)
    delays = [k // channels for k in range(num_codebooks)]
    if full.shape[-1] < 1 + prompt + frames + max(delays):
        raise RuntimeError(f"decoder returned {full.shape[-1]} positions, {1 + prompt + frames + max(delays)} expected")
    return torch.stack([full[:, k, 1 + prompt + d : 1 + prompt + d + frames] for k, d in enumerate(delays)], dim=1)


class MusicActor(GuardedStage):
    actor_name = "MusicActor"

    def __init__(self, out: str, music: MusicConfig, tiny_cache: str, run_id: str | None = None,
                 max_deaths: int = 3, time_scale: float = 1.0):
        """``music``: the run's music section (model, sampling, windows, mastering, formats;
        its own checks already ran); ``run_id``/``max_deaths``: the crash guard;
        ``time_scale``: the sim engine's (``sim.time_scale``)."""
        self._start_guard(out, run_id, max_deaths)  # see actors.faults: deaths are counted, not looped
        self.worker = worker_info("MusicActor")
        self.batch_size = music.batch_size  # tracks per generate() call
        self.m = m = self._load(music.model_id, lambda: load_music(music.engine, music.model_id, Path(tiny_cache),
                                                                   time_scale))
        if m is None:  # the model cannot load here (self.broken says why): every track fails, named
            return
        self.formats = list(music.formats)
        self.compression_level = music.compression_level
        self.gen_kwargs = dict(guidance_scale=music.guidance_scale, do_sample=music.do_sample, top_k=music.top_k,
                               top_p=music.top_p, temperature=music.temperature)
        self.master_kwargs = dict(target_lufs=music.target_lufs, true_peak_db=music.true_peak_db,
                                  fade_in_s=music.fade_in_s, fade_out_s=music.fade_out_s)
        # window plan in decoder frames; what depends on the model is checked once here
        # (stride < window and the crossfade's fit are the config's own checks)
        if m.sample_rate % m.frame_rate:
            raise ValueError(f"sample_rate={m.sample_rate} is not a whole number of frames at {m.frame_rate} Hz")
        self.hop = m.sample_rate // m.frame_rate  # samples per frame
        self.window = int(round(music.window_s * m.frame_rate))
        self.stride = int(round(music.stride_s * m.frame_rate))
        self.context = self.window - self.stride
        self.fade = int(round(music.crossfade_s * m.sample_rate))
        steps = 1 + self.window + self._delay_steps + m.prefix_positions
        if steps > m.max_positions:
            raise ValueError(
                f"window_s={music.window_s} needs {steps} decoder positions; this model has {m.max_positions} "
                f"(at most {(m.max_positions - 1 - self._delay_steps - m.prefix_positions) / m.frame_rate:.1f} s)"
            )

    @property
    def _delay_steps(self) -> int:
        """Extra decoder steps the delay pattern costs a call (codebooks per channel - 1)."""
        return self.m.num_codebooks // self.m.audio_channels - 1

    # ------------------------------------------------------------------ Ray Data entry
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [i for i, kind in enumerate(batch["kind"]) if kind == KIND_TRACK]
        if not todo:
            return batch
        batch = writable(batch)
        self._process(batch, todo, self.batch_size, self._render)
        return batch

    def _render(self, batch, idx: list[int]) -> None:
        """Generate the tracks ``idx`` as one batch, then master and write each."""
        results = self._generate([batch[c][idx] for c in ("prompt", "duration_s", "seed")])
        for i, res in zip(idx, results):
            self._write(batch, i, *res)

    # ------------------------------------------------------------------ steps
    def _window(self, inputs: dict, prompt: torch.Tensor | None, frames: int) -> tuple[np.ndarray, torch.Tensor]:
        """One generate() call: ``frames`` new frames after ``prompt`` codes (b, K, P) or
        none. Returns the audio of prompt + new frames (b, samples) and the new codes."""
        m = self.m
        b = inputs["input_ids"].shape[0]
        p = 0 if prompt is None else prompt.shape[-1]
        tap = _LastTokens()
        kwargs = dict(inputs, max_new_tokens=frames + self._delay_steps, **self.gen_kwargs)
        kwargs["stopping_criteria"] = StoppingCriteriaList([tap])
        if prompt is not None:  # generate() prepends the start token and lays the codes out delayed
            kwargs["decoder_input_ids"] = prompt.reshape(b * m.num_codebooks, p)
        with sdpa_kernel(_ATTENTION), self._on_gpu():
            audio = m.model.generate(**kwargs)
        audio = audio.float().mean(dim=1).cpu().numpy()  # (b, samples); stereo checkpoints downmixed
        if audio.shape[1] < (p + frames) * self.hop:
            raise RuntimeError(f"model returned {audio.shape[1]} samples, {(p + frames) * self.hop} expected")
        codes = undelay(tap.ids, b, m.num_codebooks, m.audio_channels, p, frames)
        return audio[:, : (p + frames) * self.hop], codes

    def _generate(self, cols) -> list[tuple[np.ndarray, float, dict]]:
        """All windows of all tracks, in lockstep; each track trimmed to its own duration.
        Returns per track (audio, generation seconds, window plan)."""
        prompts, durations, seeds = cols
        m, hop = self.m, self.hop
        # 1. check inputs: a whole number of frames covers each asked duration
        need = [int(round(float(d) * m.sample_rate)) for d in durations]
        bad = [float(d) for d, n in zip(durations, need) if n <= 0]
        if bad:
            raise ValueError(f"duration_s={bad[0]} must be positive")
        frames = [math.ceil(n / hop) for n in need]
        # 2. tokenize (padding=True: prompts of any length share one batch)
        inputs = m.tokenizer(list(map(str, prompts)), padding=True, return_tensors="pt").to(m.device)
        # 3. first window for everyone, seeded from the batch's track seeds (reproducible batches)
        torch.manual_seed(int(sum(int(s) for s in seeds)) & 0x7FFFFFFF)
        n_tracks = len(prompts)
        done = min(self.window, max(frames))  # frames every running track has so far
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio, codes = self._window(inputs, None, done)
        share = (time.perf_counter() - t0) / n_tracks
        tracks = [audio[k] for k in range(n_tracks)]
        tails = {k: codes[k, :, -self.context :] for k in range(n_tracks)}  # context of the next window
        plans = [[[0, done]] for _ in range(n_tracks)]  # per track: [first, last) frame of each window
        gen_s = [share] * n_tracks
        # 4. further windows: the tracks still short continue together from their last context
        running = [k for k in range(n_tracks) if frames[k] > done]
        while running:
            new = min(self.stride, max(frames[k] - done for k in running))
            sub = {key: value[running] for key, value in inputs.items()}
            prompt = torch.stack([tails[k] for k in running])
            t0 = time.perf_counter()
            with torch.inference_mode():
                audio, codes = self._window(sub, prompt, new)
            share = (time.perf_counter() - t0) / len(running)
            for j, k in enumerate(running):
                tracks[k] = crossfade(tracks[k], audio[j], self.context * hop, self.fade)
                tails[k] = torch.cat([tails[k], codes[j]], dim=-1)[:, -self.context :]
                plans[k].append([done - self.context, done + new])
                gen_s[k] += share
            done += new
            running = [k for k in running if frames[k] > done]
        # 5. trim each track to its asked duration; its window plan in seconds
        results = []
        for k in range(n_tracks):
            if len(tracks[k]) < need[k]:
                raise RuntimeError(f"stitched {len(tracks[k])} samples, {need[k]} asked")
            plan = {
                "window_s": self.window / m.frame_rate,
                "stride_s": self.stride / m.frame_rate,
                "context_s": self.context / m.frame_rate,
                "crossfade_s": self.fade / m.sample_rate,
                # [start_s, end_s] of each generate() call's audio in the track (context included)
                "windows": [[a / m.frame_rate, min(b * hop, need[k]) / m.sample_rate] for a, b in plans[k]],
            }
            results.append((tracks[k][: need[k]], gen_s[k], plan))
        return results

    def _write(self, batch, i, audio: np.ndarray, gen_s: float, plan: dict) -> None:
        t0 = time.perf_counter()
        album_id, track_no = str(batch["album_id"][i]), int(batch["item_no"][i])
        stem = f"{media_dir(album_id)}/track-{track_no:02d}"
        try:
            audio, lufs = master(audio, self.m.sample_rate, **self.master_kwargs)
            rel = write_audio(audio, self.m.sample_rate, stem, self.formats, self.compression_level, store=self.out)
        except WriteError as e:  # disk full, permissions: it names the file and the cause
            self._fail(batch, i, str(e))
            return
        except Exception as e:
            self._fail(batch, i, f"mastering/encoding failed: {type(e).__name__}: {e}")
            return
        batch["status"][i] = STATUS_OK
        batch["worker"][i] = json.dumps({**self.worker, "done": time.time()})
        batch["path"][i] = rel[0]
        batch["paths"][i] = "|".join(rel)
        batch["actual_s"][i] = len(audio) / self.m.sample_rate
        batch["sample_rate"][i] = self.m.sample_rate
        batch["lufs"][i] = lufs if np.isfinite(lufs) else float("nan")
        batch["windows"][i] = json.dumps(plan)
        batch["gen_s"][i] = gen_s
        batch["encode_s"][i] = time.perf_counter() - t0
