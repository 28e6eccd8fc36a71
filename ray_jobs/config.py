"""One typed config for a generate run: every default is visible here.

Sections mirror the pipeline: plan (director) -> music -> image -> cluster. Unknown keys
are errors (``extra="forbid"``) in a config file and in code alike. CLI flags override
a config file, which overrides these defaults.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Engine = Literal["tiny", "real"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PlanConfig(_Section):
    director: Literal["auto", "offline", "openai"] = "auto"  # auto: openai when a key or base URL is set
    director_model: str = "gpt-4o-mini"  # any model the OpenAI-compatible server knows
    prompts_dir: Path | None = None  # a folder of *.j2 that overrides prompts/ file by file
    tracks_per_album: int = Field(8, ge=1, le=30)
    track_seconds: float = Field(30.0, gt=0, le=900)  # default duration the director asks for
    lyrics: bool = False
    concurrency: int = Field(8, ge=1, le=256)  # albums planned at once (LLM requests in flight)
    timeout_s: float = Field(60.0, gt=0)  # per LLM request
    max_attempts: int = Field(3, ge=1, le=10)  # answers per step: an invalid one is re-asked with its error
    # LLM director (OpenAI-compatible; server from OPENAI_BASE_URL, key from OPENAI_API_KEY, never in config)
    steps: Literal["single", "chain"] = "single"  # single: one request per album; chain: one per template step
    response_format: Literal["auto", "json_schema", "json_object", "text"] = "auto"  # auto: json_schema, falling
    #   back to json_object, then plain JSON instructions, when a server refuses (remembered per server)
    max_retries: int = Field(5, ge=0, le=20)  # per request, on 429 / 5xx / timeouts / connection errors
    retry_backoff_s: float = Field(1.0, ge=0)  # first retry delay, doubled each retry (jitter); Retry-After wins
    retry_backoff_max_s: float = Field(30.0, ge=0)  # cap on one retry delay
    requests_per_minute: float | None = Field(None, gt=0)  # None: no cap beyond `concurrency` in flight
    temperature: float | None = Field(0.7, ge=0, le=2)  # None: the server's default
    max_tokens: int | None = Field(None, ge=1)  # per answer; None: the server's default


class MusicConfig(_Section):
    engine: Engine = "tiny"
    model_id: str = "facebook/musicgen-small"  # real engine: HF id or local folder
    batch_size: int = Field(8, ge=1)  # tracks per generate() call
    guidance_scale: float = 3.0
    do_sample: bool = True
    top_k: int = 250
    temperature: float = 1.0
    formats: list[Literal["ogg", "wav", "flac"]] = ["ogg"]  # first one is the primary path
    num_gpus: float = Field(0.5, ge=0, le=8)  # fraction of a GPU per actor
    num_cpus: float = Field(1.0, gt=0)
    max_actors: int | None = None  # None: as many as the cluster's GPUs (or CPUs) allow


class ImageConfig(_Section):
    engine: Engine = "tiny"
    model_id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    steps: int = Field(30, ge=1, le=200)
    guidance_scale: float = 7.5
    width: int = Field(512, ge=8)
    height: int = Field(512, ge=8)
    negative_prompt: str = "text, watermark, signature, blurry, lowres"
    batch_size: int = Field(4, ge=1)  # covers per pipeline call
    num_gpus: float = Field(0.5, ge=0, le=8)
    num_cpus: float = Field(1.0, gt=0)
    max_actors: int | None = None

    @model_validator(mode="after")
    def _multiple_of_8(self):
        for name in ("width", "height"):
            v = getattr(self, name)
            if v % 8:
                raise ValueError(f"image {name}={v} must be a multiple of 8")
        return self


# Presets: what ``--engine`` starts from before a config file and flags. ``real`` is the
# defaults above (what V100s run); ``tiny`` is small enough for a laptop CPU in seconds.
PRESETS: dict[str, dict] = {
    "real": {"music": {"engine": "real"}, "image": {"engine": "real"}},
    "tiny": {
        "music": {"engine": "tiny", "batch_size": 4, "num_cpus": 0.5},
        "image": {"engine": "tiny", "width": 64, "height": 64, "steps": 4, "batch_size": 4, "num_cpus": 0.5},
        "plan": {"tracks_per_album": 3, "track_seconds": 4.0},
    },
}


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


class RunConfig(_Section):
    out: Path = Path("out")
    seed: int = 0  # base seed: album, track and cover seeds derive from it
    plan: PlanConfig = PlanConfig()
    music: MusicConfig = MusicConfig()
    image: ImageConfig = ImageConfig()
    tiny_cache: Path = REPO_ROOT / ".cache" / "tiny-models"  # where tiny engines are built once
    ray_address: str | None = None  # None: join RAY_ADDRESS / a running job's cluster, else start local
    gpus: Literal["auto", "none"] = "auto"  # none: never ask Ray for GPUs (CPU-only runs)

    @classmethod
    def load(cls, path: Path | None = None, preset: str = "tiny", **overrides) -> "RunConfig":
        """Defaults <- preset <- config file (TOML or JSON) <- overrides (dotted keys)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (expected one of {sorted(PRESETS)})")
        data: dict = _merge({}, PRESETS[preset])
        if path is not None:
            path = Path(path)
            text = path.read_text()
            data = _merge(data, tomllib.loads(text) if path.suffix == ".toml" else json.loads(text))
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return cls.model_validate(data)

    def plan_settings(self, director: str) -> dict:
        """What changes a plan, and so the album_id (``director``: the resolved one)."""
        return {
            "tracks_per_album": self.plan.tracks_per_album,
            "track_seconds": self.plan.track_seconds,
            "lyrics": self.plan.lyrics,
            "director": director,
            "director_model": self.plan.director_model if director != "offline" else None,
        }
