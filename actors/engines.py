"""The one seam between configs and models: ``real``, ``tiny`` or ``sim``.

``real`` loads Hugging Face ids or local folders; ``tiny`` builds tiny random-weight
models of the same classes once (``actors.tiny``) and loads them from their folder.
Either way the model comes from ``from_pretrained``: fp16 on CUDA (V100 has no bf16),
fp32 on CPU. ``sim`` loads nothing: objects with the same calls sleep for what the real
model costs on a V100 (``actors.sim``, a scheduling model, never a model test). Nothing
downstream knows which engine it got.

Actors never download: an HF id is resolved to its snapshot folder in this node's Hugging
Face cache (``albumforge.models.local_model``, the same code the driver's preflight runs)
and loaded with ``local_files_only=True``; a model that is not there is a named
``ModelMissing`` error that says how to fetch it (``albumforge models fetch``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from actors.musicmodel import MusicModel


def device_and_dtype() -> tuple[str, torch.dtype]:
    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.float32


# what each kind of model is, for the resolution in albumforge.models: (form, config field)
_KINDS = {"music": ("transformers", "music.model_id"), "image": ("diffusers", "image.model_id"),
          "clip": ("transformers", "image.clip_model")}


def resolve_source(kind: str, engine: str, model_id: str, tiny_cache: Path) -> str:
    """Where ``from_pretrained`` reads from: a local folder (the given one, or the HF id's
    snapshot in this node's cache: never the network), or the tiny model folder."""
    if engine == "real":
        from albumforge.models import local_model

        if kind not in _KINDS:
            raise ValueError(f"unknown model kind {kind!r} (expected one of {sorted(_KINDS)})")
        form, field = _KINDS[kind]
        return local_model(model_id, form, field)
    elif engine == "tiny":
        from actors.tiny import ensure_tiny

        return str(ensure_tiny(kind, tiny_cache))
    else:
        raise ValueError(f"engine {engine!r} has no {kind} model to load (expected 'tiny' or 'real')")


# MusicGen classes by the checkpoint's config model_type (not by its id: a local folder or a
# fine-tune keeps its model_type). facebook/musicgen-small|medium|large -> "musicgen";
# facebook/musicgen-melody -> "musicgen_melody" (its decoder also reads text and chroma).
MUSIC_CLASSES = {
    "musicgen": "MusicgenForConditionalGeneration",
    "musicgen_melody": "MusicgenMelodyForConditionalGeneration",
}


def music_class(model_type: str):
    """The transformers class that loads a MusicGen checkpoint of this ``model_type``."""
    import transformers

    if model_type not in MUSIC_CLASSES:
        raise ValueError(f"music model_type={model_type!r} is not a MusicGen checkpoint "
                         f"(expected one of {sorted(MUSIC_CLASSES)})")
    return getattr(transformers, MUSIC_CLASSES[model_type])


def load_music(engine: str, model_id: str, tiny_cache: Path, time_scale: float = 1.0) -> MusicModel:
    """MusicGen on the best device (``time_scale``: the sim engine's, see ``actors.sim``)."""
    if engine == "sim":
        from actors.sim import sim_music

        return sim_music(model_id, time_scale)
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    device, dtype = device_and_dtype()
    source = resolve_source("music", engine, model_id, tiny_cache)
    config = AutoConfig.from_pretrained(source, local_files_only=True)
    cls = music_class(config.model_type)
    model = cls.from_pretrained(source, config=config, dtype=dtype, local_files_only=True).to(device).eval()
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=True)
    except ImportError:  # musicgen-melody's chroma feature extractor needs torchaudio; text prompts do not
        processor = None
    audio, decoder = model.config.audio_encoder, model.config.decoder
    return MusicModel(
        model=model,
        processor=processor,
        tokenizer=AutoTokenizer.from_pretrained(source, local_files_only=True),
        device=device,
        sample_rate=int(audio.sampling_rate),
        frame_rate=int(audio.frame_rate),
        num_codebooks=int(decoder.num_codebooks),
        max_positions=int(decoder.max_position_embeddings),
        audio_channels=int(getattr(decoder, "audio_channels", 1)),
        prefix_positions=int(getattr(model.config, "chroma_length", 0)),
    )


_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def image_source(engine: str, model_id: str, tiny_cache: Path) -> tuple[str, str]:
    """How and from where the image pipeline loads, picked by what ``model_id`` is:
    ("single_file", a .safetensors/.ckpt file or URL) or ("pretrained", a diffusers folder or an HF id)."""
    if engine != "real":
        return "pretrained", resolve_source("image", engine, model_id, tiny_cache)
    if model_id.lower().endswith(_SINGLE_FILE_SUFFIXES):
        if model_id.startswith(("http://", "https://")):
            return "single_file", model_id
        path = Path(model_id).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image model_id={model_id!r}: no such checkpoint file")
        return "single_file", str(path)
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"image model_id={model_id!r}: folder has no model_index.json, so it is not a diffusers pipeline"
                " (give a single checkpoint by its .safetensors path)"
            )
        return "pretrained", str(path)
    return "pretrained", model_id  # a Hugging Face id


def load_image(
    engine: str,
    model_id: str,
    tiny_cache: Path,
    single_file_config: str | None = None,
    lora_path: str | None = None,
    lora_scale: float = 1.0,
    textual_inversion: list[dict] | tuple = (),
    time_scale: float = 1.0,
):
    """A ``StableDiffusionPipeline`` on the best device, safety checker as the weights ship it.

    ``model_id`` is an HF id, a diffusers folder or one checkpoint file (``from_single_file``,
    configs from ``single_file_config`` when given); then LoRA weights are fused in at
    ``lora_scale`` (peft backend) and textual-inversion embeddings ({path, token}) added.
    The sim engine: ``actors.sim`` (LoRA and embeddings change no cost there: not read).
    """
    if engine == "sim":
        from actors.sim import sim_image

        return sim_image(time_scale)
    from diffusers import StableDiffusionPipeline

    from albumforge import models

    device, dtype = device_and_dtype()
    how, source = image_source(engine, model_id, tiny_cache)
    if how == "single_file":
        # the file and the configs of its pipeline, both local (else diffusers would fetch the
        # configs it infers from the hub): SD 1.5's when no single_file_config is given
        if source.startswith(("http://", "https://")):
            source = models.local_model(source, models.SINGLE_FILE, "image.model_id")
        config = models.local_model(single_file_config or models.SD_CONFIG_REPO, models.PIPELINE_CONFIG,
                                    "image.single_file_config")
        pipe = StableDiffusionPipeline.from_single_file(source, torch_dtype=dtype, config=config,
                                                        local_files_only=True)
    else:
        if engine == "real" and not Path(source).is_dir():
            source = models.local_model(source, models.DIFFUSERS, "image.model_id")
        variant = models.diffusers_variant(source, fp16=dtype == torch.float16)
        pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype, variant=variant, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if lora_path:
        # fused: no per-step LoRA cost, and a hires img2img pipeline built from these
        # components shares the fused weights
        lora = models.local_model(lora_path, models.LORA, "image.lora_path")
        pipe.load_lora_weights(lora, adapter_name="house", local_files_only=True)
        pipe.fuse_lora(lora_scale=lora_scale, adapter_names=["house"])
    for k, emb in enumerate(textual_inversion or ()):
        emb = {"path": emb} if isinstance(emb, str) else emb
        path = models.local_model(emb["path"], models.EMBEDDING, f"image.textual_inversion[{k}].path")
        pipe.load_textual_inversion(path, token=emb.get("token"), local_files_only=True)
    return pipe


def load_clip(engine: str, model_id: str, tiny_cache: Path):
    """A CLIP model and processor for scoring images against prompts (tiny engine: tiny random CLIP)."""
    from transformers import CLIPModel, CLIPProcessor

    device, dtype = device_and_dtype()
    source = resolve_source("clip", engine, model_id, tiny_cache)
    model = CLIPModel.from_pretrained(source, dtype=dtype, local_files_only=True).to(device).eval()
    return model, CLIPProcessor.from_pretrained(source, local_files_only=True), device
