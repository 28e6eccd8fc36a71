"""One typed config for a generate run: every default is visible here.

Sections mirror the pipeline: plan (director) -> music -> image -> cluster. Unknown keys
are errors (``extra="forbid"``) in a config file and in code alike. CLI flags override
a config file, which overrides these defaults.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from albumforge.resources import data_dir, user_cache_dir

Engine = Literal["tiny", "real", "sim"]  # sim: a V100 cost model, no weights (actors/sim.py)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PlanConfig(_Section):
    director: Literal["auto", "offline", "openai", "sim"] = Field(
        "auto", description="auto: openai when a key or base URL is set; sim: offline plus an LLM's modelled latency"
    )
    director_model: str = Field("gpt-4o-mini", description="any model the OpenAI-compatible server knows")
    prompts_dir: Path | None = Field(None, description="a folder of *.j2 that overrides prompts/ file by file")
    tracks_per_album: int = Field(8, ge=1, le=30, description="tracks the director plans per album")
    track_seconds: float = Field(30.0, gt=0, le=900, description="default duration the director asks for")
    lyrics: bool = Field(
        False, description="the director also writes lyrics (kept in the manifests; the music stays instrumental)"
    )
    concurrency: int = Field(8, ge=1, le=256, description="albums planned at once (LLM requests in flight)")
    timeout_s: float = Field(60.0, gt=0, description="per LLM request")
    max_attempts: int = Field(3, ge=1, le=10, description="answers per step: an invalid one is re-asked with its error")
    # LLM director (OpenAI-compatible; server from OPENAI_BASE_URL, key from OPENAI_API_KEY, never in config)
    steps: Literal["single", "chain"] = Field(
        "single", description="single: one request per album; chain: one per template step"
    )
    response_format: Literal["auto", "json_schema", "json_object", "text"] = Field(
        "auto",
        description="auto: json_schema, falling back to json_object, then plain JSON instructions, when a server refuses (remembered per server)",
    )
    max_retries: int = Field(5, ge=0, le=20, description="per request, on 429 / 5xx / timeouts / connection errors")
    retry_backoff_s: float = Field(
        1.0, ge=0, description="first retry delay, doubled each retry (jitter); Retry-After wins"
    )
    retry_backoff_max_s: float = Field(30.0, ge=0, description="cap on one retry delay")
    requests_per_minute: float | None = Field(None, gt=0, description="None: no cap beyond `concurrency` in flight")
    temperature: float | None = Field(0.7, ge=0, le=2, description="None: the server's default")
    max_tokens: int | None = Field(None, ge=1, description="per answer; None: the server's default")


class MusicConfig(_Section):
    engine: Engine = "tiny"
    # real engine: HF id or local folder. facebook/musicgen-small | -medium | -large (MusicgenForConditionalGeneration)
    # or facebook/musicgen-melody (MusicgenMelodyForConditionalGeneration); the class follows the config's model_type
    model_id: str = Field(
        "facebook/musicgen-small", description="MusicGen: HF id or folder (small, medium, large, melody)"
    )
    batch_size: int = Field(8, ge=1, description="tracks per generate() call (all windows of a batch run in lockstep)")
    # sampling (audiocraft's defaults): classifier-free guidance, top-k 250, temperature 1
    guidance_scale: float = Field(
        3.0, ge=0, description="> 1 doubles the batch internally (conditional + unconditional)"
    )
    do_sample: bool = True
    top_k: int = Field(250, ge=0, description="0: off")
    top_p: float = Field(
        1.0, gt=0, le=1, description="nucleus sampling; 1.0: off (audiocraft uses top_p alone with top_k=0)"
    )
    temperature: float = Field(1.0, gt=0)
    # tracks longer than one window: audiocraft's extend_stride sliding window. Each further window keeps the last
    # window_s - stride_s seconds as context (as codes) and adds stride_s new seconds; windows are joined with a
    # crossfade of crossfade_s inside that context. A track that fits one window is one plain generate() call.
    window_s: float = Field(30.0, gt=0, description="seconds per generate() call; the real models were trained on 30 s")
    stride_s: float = Field(18.0, gt=0, description="new seconds per further window (must be < window_s)")
    crossfade_s: float = Field(
        1.0, ge=0, description="equal-power, correlation-compensated; at most window_s - stride_s"
    )
    # mastering (actors/audio.py): fades, loudness normalisation (ITU-R BS.1770 / EBU R128), true-peak limiter
    target_lufs: float | None = Field(-14.0, le=0, description="integrated loudness target; None: no normalisation")
    true_peak_db: float = Field(-1.0, le=0, description="ceiling of the 4x-oversampled peak, dBTP")
    fade_in_s: float = Field(0.05, ge=0, description="each fade takes at most a quarter of the track")
    fade_out_s: float = Field(2.0, ge=0)
    formats: list[Literal["ogg", "mp3", "flac", "wav"]] = Field(["ogg"], description="first one is the primary path")
    compression_level: float = Field(
        0.2, ge=0, le=1, description="OGG/MP3/FLAC: 0 best quality (largest) .. 1 smallest"
    )
    num_gpus: float | None = Field(
        None, ge=0, le=1,
        description="GPU share per music actor; None: derived from gpu_memory_gb and the card's memory so that one"
        " music and one image actor share a card and never over-commit it (ray_jobs/placement.py); a number is"
        " checked against them",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0,
        description="GPU memory one music actor needs; None: placement.MUSIC_MEMORY_GB for model_id at this"
        " batch_size and window_s (the README's table); set it for a fine-tune or a folder with another name",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs each music actor reserves (always explicit: see FIELD-NOTES)")
    min_actors: int | None = Field(
        None, ge=1,
        description="the pool never shrinks below this; None: the actors the nodes up at the start hold (at least 1),"
        " so warm models are not unloaded in a lull",
    )
    max_actors: int | None = Field(
        None, ge=1,
        description="None: what the cluster can grow to (autoscaler limits, else cluster.grow_factor x the GPU nodes"
        " now), counting only nodes that can host the actor",
    )

    @model_validator(mode="after")
    def _windows(self):
        if self.stride_s >= self.window_s:
            raise ValueError(
                f"music stride_s={self.stride_s} must be less than window_s={self.window_s} "
                "(each further window keeps window_s - stride_s seconds of context)"
            )
        if self.crossfade_s > self.window_s - self.stride_s + 1e-9:
            raise ValueError(
                f"music crossfade_s={self.crossfade_s} must fit in the context "
                f"window_s - stride_s = {self.window_s - self.stride_s:g}"
            )
        if not self.formats:
            raise ValueError("music formats must name at least one format")
        _check_pool_bounds("music", self)
        return self


class ImageConfig(_Section):
    engine: Engine = "tiny"
    # real engine: an HF id, a diffusers folder (model_index.json), or one .safetensors/.ckpt file
    # (StableDiffusionPipeline.from_single_file); tiny engine: ignored (a tiny random SD)
    model_id: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Stable Diffusion: HF id, diffusers folder or one .safetensors/.ckpt file",
    )
    single_file_config: str | None = Field(
        None, description="single file: HF id or diffusers folder of its configs (None: inferred)"
    )
    steps: int = Field(30, ge=1, le=200, description="denoising steps per image")
    guidance_scale: float = Field(7.5, description="classifier-free guidance of the image model")
    width: int = Field(512, ge=8, description="image width in pixels (a multiple of 8)")
    height: int = Field(512, ge=8, description="image height in pixels (a multiple of 8)")
    style: str = Field(
        "none", description="house style: a preset name in prompts/styles/ or a path to a YAML (prefix + negative)"
    )
    negative_prompt: str = Field(
        "text, watermark, signature, blurry, lowres", description="after the style's negative prompt"
    )
    lora_path: str | None = Field(
        None, description="LoRA weights (file, folder or HF id; needs peft), fused at lora_scale"
    )
    lora_scale: float = Field(1.0, ge=-4, le=4, description="strength the LoRA is fused at (0: off)")
    textual_inversion: list[Embedding] = Field([], description="[{path, token}]; a plain string is a path")
    long_prompts: Literal["chunk", "truncate"] = Field(
        "chunk",
        description="past CLIP's 77 tokens: encode in 75-token chunks and concatenate the embeddings, or let CLIP cut; either way recorded per image in prompt_note",
    )
    max_prompt_tokens: int = Field(
        225, ge=75, le=750, description="chunk: longest prompt encoded; the rest is cut (noted)"
    )
    hires_scale: float = Field(
        1.0, ge=1.0, le=4.0, description="> 1: a second img2img pass at width*scale x height*scale"
    )
    hires_strength: float = Field(0.45, gt=0, le=1, description="img2img strength of the second pass")
    hires_steps: int = Field(
        20, ge=1, le=200, description="img2img steps (it denoises about hires_steps * hires_strength)"
    )
    track_art: bool = Field(
        False, description="also one image per track from its visual prompt (media/<album>/track-NN.png)"
    )
    clip_model: str | None = Field(
        "openai/clip-vit-base-patch32",
        description="CLIP score of each image vs its prompt (real engine: HF id or folder; tiny engine: a tiny random CLIP); None: no score",
    )
    batch_size: int = Field(4, ge=1, description="images (covers, track art) per pipeline call")
    num_gpus: float | None = Field(None, ge=0, le=1, description="GPU share per image actor; None: derived (see music.num_gpus)")
    gpu_memory_gb: float | None = Field(
        None, gt=0,
        description="GPU memory one image actor needs; None: placement.IMAGE_MEMORY_GB (SD 1.x) scaled to batch_size"
        " and the largest pass's pixels (hires included)",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs each image actor reserves")
    min_actors: int | None = Field(None, ge=1, description="None: derived (see music.min_actors)")
    max_actors: int | None = Field(None, ge=1, description="None: derived (see music.max_actors)")

    @field_validator("textual_inversion", mode="before")
    @classmethod
    def _paths_are_embeddings(cls, v):
        return [{"path": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _multiple_of_8(self):
        for name in ("width", "height"):
            v = getattr(self, name)
            if v % 8:
                raise ValueError(f"image {name}={v} must be a multiple of 8")
        for name in ("width", "height"):
            v = getattr(self, name) * self.hires_scale
            if v != int(v) or int(v) % 8:
                raise ValueError(
                    f"image hires_scale={self.hires_scale} gives {name} {getattr(self, name)} x {self.hires_scale}"
                    f" = {v:g}, which must be a whole multiple of 8"
                )
        if self.hires_scale != 1.0 and int(self.hires_steps * self.hires_strength) < 1:
            raise ValueError(
                f"image hires_steps={self.hires_steps} x hires_strength={self.hires_strength} rounds down to 0"
                " img2img steps: raise either"
            )
        if self.engine == "sim" and self.hires_scale != 1.0:
            raise ValueError(f"image hires_scale={self.hires_scale}: the sim engine does not model the hires pass "
                             "(set hires_scale = 1)")
        load_style(self.style)  # a bad style name or file fails here, before any model loads
        _check_pool_bounds("image", self)
        return self

    def hires_size(self) -> tuple[int, int]:
        return int(self.width * self.hires_scale), int(self.height * self.hires_scale)

    def style_words(self) -> tuple[str, str, str]:
        """(prefix, suffix, negative prompt) of the house style around every image prompt:
        the style's negative prompt first, then this section's."""
        style = load_style(self.style)
        negative = ", ".join(p for p in (style.negative_prompt.strip(), self.negative_prompt.strip()) if p)
        return style.prefix, style.suffix, negative


# ---------------------------------------------------------------- image helpers
# (after ImageConfig on purpose: pydantic resolves ImageConfig's annotations on first use)
STYLES_DIR = data_dir("prompts") / "styles"


class StylePreset(_Section):
    """A house style (``prompts/styles/<name>.yaml``): the same look on every image of a batch."""

    description: str = ""
    prefix: str = Field("", description='put before every director prompt: "<prefix>, <prompt>"')
    suffix: str = Field("", description='put after it: "<prompt>, <suffix>"')
    negative_prompt: str = Field("", description="put before ImageConfig.negative_prompt")

    def apply(self, prompt: str) -> str:
        return ", ".join(p for p in (self.prefix.strip(), prompt.strip(), self.suffix.strip()) if p)


def load_style(style: str) -> StylePreset:
    """A style by preset name (``prompts/styles/<name>.yaml``) or by path to a YAML file."""
    import yaml

    path = Path(style)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = STYLES_DIR / f"{style}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in STYLES_DIR.glob("*.yaml"))
            raise ValueError(f"image style={style!r}: no such preset (expected one of {names} or a path to a YAML)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"image style={style!r}: cannot read {path} ({e})") from None
    try:
        return StylePreset.model_validate(data)
    except ValueError as e:
        raise ValueError(f"image style={style!r}: {path} is not a valid style preset ({e})") from None


class Embedding(_Section):
    """A textual-inversion embedding: ``load_textual_inversion(path, token=token)``."""

    path: str  # .safetensors / .bin / .pt file, a folder, or an HF id
    token: str | None = Field(
        None, description="None: the token stored in the file (A1111 files store none: then required)"
    )


def _check_pool_bounds(section: str, cfg) -> None:
    if cfg.max_actors is not None and cfg.min_actors is not None and cfg.min_actors > cfg.max_actors:
        raise ValueError(f"{section} min_actors={cfg.min_actors} must not exceed max_actors={cfg.max_actors}")


class ClusterConfig(_Section):
    """What the pools may grow to and how actors share a card (ray_jobs/placement.py)."""

    gpu_memory_gb: float | None = Field(
        None, gt=0,
        description="memory of one card; None: from the GPU nodes' accelerator type when Ray reports one"
        " (placement.ACCELERATOR_MEMORY_GB, the smallest card wins), else 16 (V100-16GB)",
    )
    cuda_context_gb: float = Field(0.5, ge=0, description="per actor process, on top of its model's declared memory")
    autoscaler_config: Path | None = Field(
        None,
        description="the launcher YAML whose node types bound the pools; None: the GCS's autoscaler config, else"
        " ~/ray_bootstrap_config.yaml when it exists (what `ray up` leaves on the head)",
    )
    grow_factor: float = Field(
        2.0, ge=1.0,
        description="no autoscaler limits known: pools may grow to this many times the actors the GPU nodes hold"
        " now (nodes added by hand, KubeRay without autoscaler config)",
    )


class FaultConfig(_Section):
    """How failures end (see actors/faults.py and ray_jobs/watch.py): bounded, and named."""

    max_deaths: int = Field(
        3,
        ge=1,
        le=20,
        description="an item in flight when its worker process died this many times (segfault, OOM kill, lost node) fails, naming the cause; its batch-mates are retried alone",
    )
    max_load_deaths: int = Field(
        3,
        ge=1,
        le=20,
        description="a stage whose actors died this many times while loading their model, with none of them ready"
        " in between (a loader that crashes, a CUDA fault at start, an OOM kill while loading), stops: its actors"
        " load nothing more and every item left to it fails naming the cause (ray_jobs/watch.py StartupWatch)",
    )
    placement_timeout_s: float = Field(
        300.0,
        gt=0,
        description="a stage that no live node can hold (GPU node lost, none added) for this long ends the run: the albums not finished are failed rows naming the missing resource",
    )
    hold_stale_s: float = Field(
        60.0,
        gt=0,
        description="one run per OUT: a hold not refreshed for this long (its run's host died) is taken over; a hold whose pid is gone on this host is taken over at once",
    )


class SimConfig(_Section):
    """The sim engine (actors/sim.py): a scheduling model of a V100 cluster, never a model test."""

    time_scale: float = Field(
        1.0, gt=0, le=1,
        description="sim engine: sleep the modelled V100 seconds times this (0.01: 100x faster); figures divided by"
        " it are modelled seconds (CPU work around the models is not scaled)",
    )


# Presets: what ``--engine`` starts from before a config file and flags. ``real`` is the
# defaults above (what V100s run); ``tiny`` is small enough for a laptop CPU in seconds.
PRESETS: dict[str, dict] = {
    "real": {"music": {"engine": "real"}, "image": {"engine": "real"}},
    # the real defaults on the V100 cost model: no weights, no CLIP score, the director's latency modelled
    # (its actors sleep: half a CPU each, as tiny's, so a laptop's local Ray holds a pool of each)
    "sim": {"music": {"engine": "sim", "num_cpus": 0.5}, "image": {"engine": "sim", "clip_model": None, "num_cpus": 0.5},
            "plan": {"director": "sim"}},
    "tiny": {
        "music": {"engine": "tiny", "batch_size": 4, "num_cpus": 0.5},
        "image": {
            "engine": "tiny",
            "width": 64,
            "height": 64,
            "steps": 4,
            "hires_steps": 4,
            "batch_size": 4,
            "num_cpus": 0.5,
        },
        "plan": {"tracks_per_album": 3, "track_seconds": 4.0},
    },
}


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def layered(preset: dict, path: Path | None, overrides: dict) -> dict:
    """Config data: a preset <- a config file (TOML or JSON) <- overrides (dotted keys, None: unset)."""
    data: dict = copy.deepcopy(preset)  # overrides below must not change the preset itself
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
    return data


def out_value(value):
    """``--out`` as given: a URL (``s3://…``) stays a string, anything else is a local Path."""
    from albumforge.storage import is_url

    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"out={value!r}: expected a folder path or a URL such as s3://bucket/prefix")
    if is_url(value):
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:  # s3://KEY:SECRET@bucket would land in the run row
            raise ValueError("out: a URL with credentials in it is refused (they would be written into the run "
                             "row): give them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        return value.rstrip("/")
    return Path(value.removeprefix("file://"))


class RunConfig(_Section):
    out: Path | str = Field(Path("out"), description="output folder (media, manifests, plans, logs): a local path, "
                            "or an object storage URL such as s3://bucket/prefix (credentials from the environment)")
    seed: int = Field(0, description="base seed: album, track and cover seeds derive from it")
    plan: PlanConfig = PlanConfig()
    music: MusicConfig = MusicConfig()
    image: ImageConfig = ImageConfig()
    faults: FaultConfig = FaultConfig()
    cluster: ClusterConfig = ClusterConfig()
    sim: SimConfig = SimConfig()
    # where tiny engines are built once: ~/.cache/albumforge/tiny-models ($XDG_CACHE_HOME honoured)
    tiny_cache: Path = Field(
        default_factory=lambda: user_cache_dir() / "tiny-models",
        description="where the tiny engine builds its random-weight models once (~/.cache/albumforge/tiny-models)",
    )
    ray_address: str | None = Field(
        None, description="None: join RAY_ADDRESS / a running job's cluster, else start local"
    )
    gpus: Literal["auto", "none"] = Field("auto", description="none: never ask Ray for GPUs (CPU-only runs)")

    _out = field_validator("out", mode="plain")(lambda v: out_value(v))

    @property
    def store(self):
        """OUT as an ``albumforge.storage.Store``."""
        from albumforge.storage import Store

        return Store(self.out)

    @classmethod
    def load(cls, path: Path | None = None, preset: str = "tiny", **overrides) -> "RunConfig":
        """Defaults <- preset <- config file (TOML or JSON) <- overrides (dotted keys)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (expected one of {sorted(PRESETS)})")
        return cls.model_validate(layered(PRESETS[preset], path, overrides))

    def plan_settings(self, director: str) -> dict:
        """What changes a plan, and so the album_id (``director``: the resolved one)."""
        return {
            "tracks_per_album": self.plan.tracks_per_album,
            "track_seconds": self.plan.track_seconds,
            "lyrics": self.plan.lyrics,
            "director": director,
            "director_model": self.plan.director_model if director not in ("offline", "sim") else None,
            "steps": self.plan.steps if director not in ("offline", "sim") else None,
        }
