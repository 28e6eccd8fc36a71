"""The ``sim`` engine: model objects that load nothing and sleep for what the real models
cost on a V100 (``albumforge.costs``), returning silent audio and flat grey images of the
right shapes, so the actors, Ray Data and the writers run unchanged around them.

It is a **scheduling model, never a way to test a model**: what it shows is how the
pipeline keeps GPUs busy (batch sizes, block sizes, pool shapes, planner lead), on a
``ray.cluster_utils.Cluster`` of logical GPUs. Its media are placeholders.

* ``time_scale`` (config ``sim.time_scale``): the sleeps are the modelled seconds times
  this (0.01: 100x faster); a benchmark divides measured times by it to report modelled
  V100 seconds. CPU work around the models (mastering, encoding, writing) is not scaled.
* Two actors that share a card (a music and an image actor on one GPU id) take turns, as
  CUDA contexts of two processes time-slice a real card: each modelled call holds a file
  lock named after the node and the GPU id while it sleeps.
* The placeholder audio is 8 kHz (cheap to master and encode); images have the asked size.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from albumforge.costs import IMAGE, ImageCost, MusicCost, music_cost

SAMPLE_RATE = 8000  # placeholder audio: silent, and a low rate so mastering/encoding it is cheap
FRAME_RATE = 50  # MusicGen's decoder steps per second of audio
CODEBOOKS = 4
MAX_POSITIONS = 2048  # as MusicGen: one call holds at most ~40 s


def _card() -> str | None:
    """This process's card: "<node>-<gpu ids>" under Ray (None outside Ray or with no GPU)."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not gpus:
        return None
    node = "local"
    try:
        import sys

        ray = sys.modules.get("ray")  # an actor has Ray imported; never import it here
        if ray is not None and ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        pass
    return f"{node}-{gpus.replace(',', '_')}"


@contextmanager
def card_lock(card: str | None):
    """Hold the card while a modelled call runs (processes on one card take turns)."""
    if card is None:
        yield
        return
    path = Path(tempfile.gettempdir()) / f"albumforge-sim-card-{card}.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Clock:
    """Sleeps modelled seconds x ``time_scale``; keeps what it was asked (tests inject ``sleep``)."""

    time_scale: float = 1.0
    sleep: Callable[[float], None] | None = None  # None: time.sleep (looked up at each wait)
    card: str | None = None
    asked: list[float] = field(default_factory=list)  # modelled seconds of each wait

    def wait(self, modelled_s: float, exclusive: bool = True) -> None:
        if self.time_scale <= 0:
            raise ValueError(f"sim time_scale={self.time_scale} must be positive")
        self.asked.append(modelled_s)
        with card_lock(self.card) if exclusive else nullcontext():
            (self.sleep or time.sleep)(modelled_s * self.time_scale)


# ---------------------------------------------------------------- MusicGen
class _Tokens(dict):
    def to(self, device):
        return self


class SimT5Tokenizer:
    """One token per prompt: the sim's cost does not depend on the prompt's length."""

    def __call__(self, texts, padding=True, return_tensors="pt"):
        import torch

        n = len(texts)
        return _Tokens(input_ids=torch.zeros((n, 1), dtype=torch.long),
                       attention_mask=torch.ones((n, 1), dtype=torch.long))


class SimMusicGen:
    """``generate()`` as MusicActor calls it: sleeps the window's cost, returns silence and
    a zero token matrix (to the stopping criteria, where the actor reads the codes)."""

    def __init__(self, cost: MusicCost, clock: Clock):
        self.cost, self.clock = cost, clock
        self.hop = SAMPLE_RATE // FRAME_RATE

    def generate(self, input_ids, max_new_tokens: int, stopping_criteria=(), decoder_input_ids=None,
                 guidance_scale: float = 1.0, **_):
        import torch

        b = int(input_ids.shape[0])
        prompt = 0 if decoder_input_ids is None else int(decoder_input_ids.shape[-1])
        frames = max_new_tokens - (CODEBOOKS - 1)
        self.clock.wait(self.cost.window_s(max_new_tokens, prompt, b, FRAME_RATE, guidance_scale > 1))
        ids = torch.zeros((b * CODEBOOKS, 1 + prompt + max_new_tokens), dtype=torch.long)
        for criterion in stopping_criteria or ():
            criterion(ids, None)
        return torch.zeros((b, 1, (prompt + frames) * self.hop))


def sim_music(model_id: str, time_scale: float = 1.0, sleep: Callable[[float], None] | None = None):
    """A ``MusicModel`` whose generate() sleeps what ``model_id`` costs on a V100."""
    from actors.musicmodel import MusicModel

    cost = music_cost(model_id)
    clock = Clock(time_scale, sleep, _card())
    clock.wait(cost.load_s, exclusive=False)  # loading: cards load side by side
    return MusicModel(model=SimMusicGen(cost, clock), processor=None, tokenizer=SimT5Tokenizer(), device="cpu",
                      sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, num_codebooks=CODEBOOKS,
                      max_positions=MAX_POSITIONS)


# ---------------------------------------------------------------- Stable Diffusion
class SimClipTokenizer:
    """Word tokens with no length limit: every prompt fits (the sim does not model CLIP's cut)."""

    model_max_length = 1_000_000
    bos_token_id = eos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, verbose=False):
        return SimpleNamespace(input_ids=list(range(len(str(text).split()))))

    def decode(self, ids) -> str:
        return ""


class SimDiffusion:
    """``StableDiffusionPipeline.__call__`` as ImageActor calls it: sleeps the batch's cost,
    returns flat grey images of the asked size."""

    text_encoder = None

    def __init__(self, cost: ImageCost, clock: Clock):
        self.cost, self.clock = cost, clock
        self.tokenizer = SimClipTokenizer()

    def maybe_convert_prompt(self, prompt, tokenizer):
        return prompt

    def __call__(self, prompt=None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 width: int = 512, height: int = 512, **_):
        from PIL import Image

        n = len(prompt)
        self.clock.wait(self.cost.call_s(num_inference_steps, n, width, height, guidance_scale > 1))
        return SimpleNamespace(images=[Image.new("RGB", (width, height), (128, 128, 128)) for _ in range(n)])


def sim_image(time_scale: float = 1.0, sleep: Callable[[float], None] | None = None) -> SimDiffusion:
    clock = Clock(time_scale, sleep, _card())
    clock.wait(IMAGE.load_s, exclusive=False)
    return SimDiffusion(IMAGE, clock)
