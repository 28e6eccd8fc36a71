"""The one seam between configs and models: ``real`` or ``tiny``, same loading code.

``real`` loads Hugging Face ids or local folders; ``tiny`` builds tiny random-weight
models of the same classes once (``actors.tiny``) and loads them from their folder.
Either way the model comes from ``from_pretrained``: fp16 on CUDA (V100 has no bf16),
fp32 on CPU. Nothing downstream knows which engine it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


def device_and_dtype() -> tuple[str, torch.dtype]:
    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.float32


def resolve_source(kind: str, engine: str, model_id: str, tiny_cache: Path) -> str:
    """Where ``from_pretrained`` reads from: the HF id / folder, or the tiny model folder."""
    if engine == "real":
        return model_id
    elif engine == "tiny":
        from actors.tiny import ensure_tiny

        return str(ensure_tiny(kind, tiny_cache))
    else:
        raise ValueError(f"unknown engine {engine!r} for {kind} (expected 'tiny' or 'real')")


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


@dataclass
class MusicModel:
    model: object  # MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    processor: object  # MusicgenProcessor | MusicgenMelodyProcessor | None (see load_music)
    tokenizer: object  # the T5 tokenizer of the text prompts
    device: str
    sample_rate: int
    frame_rate: int  # audio frames (decoder steps) per second
    num_codebooks: int
    max_positions: int  # decoder positions the model was built for: caps the tokens of one generate() call
    audio_channels: int = 1  # 2: stereo checkpoints (codebooks interleaved left/right)
    prefix_positions: int = 0  # decoder positions taken before the audio (melody: chroma frames)


def load_music(engine: str, model_id: str, tiny_cache: Path) -> MusicModel:
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    device, dtype = device_and_dtype()
    source = resolve_source("music", engine, model_id, tiny_cache)
    config = AutoConfig.from_pretrained(source)
    cls = music_class(config.model_type)
    model = cls.from_pretrained(source, config=config, dtype=dtype).to(device).eval()
    try:
        processor = AutoProcessor.from_pretrained(source)
    except ImportError:  # musicgen-melody's chroma feature extractor needs torchaudio; text prompts do not
        processor = None
    audio, decoder = model.config.audio_encoder, model.config.decoder
    return MusicModel(
        model=model,
        processor=processor,
        tokenizer=AutoTokenizer.from_pretrained(source),
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
):
    """A ``StableDiffusionPipeline`` on the best device, safety checker as the weights ship it.

    ``model_id`` is an HF id, a diffusers folder or one checkpoint file (``from_single_file``,
    configs from ``single_file_config`` when given); then LoRA weights are fused in at
    ``lora_scale`` (peft backend) and textual-inversion embeddings ({path, token}) added.
    """
    from diffusers import StableDiffusionPipeline

    device, dtype = device_and_dtype()
    how, source = image_source(engine, model_id, tiny_cache)
    if how == "single_file":
        extra = {"config": single_file_config} if single_file_config else {}
        pipe = StableDiffusionPipeline.from_single_file(source, torch_dtype=dtype, **extra)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if lora_path:
        # fused: no per-step LoRA cost, and a hires img2img pipeline built from these
        # components shares the fused weights
        pipe.load_lora_weights(lora_path, adapter_name="house")
        pipe.fuse_lora(lora_scale=lora_scale, adapter_names=["house"])
    for emb in textual_inversion or ():
        emb = {"path": emb} if isinstance(emb, str) else emb
        pipe.load_textual_inversion(emb["path"], token=emb.get("token"))
    return pipe


def load_clip(engine: str, model_id: str, tiny_cache: Path):
    """A CLIP model and processor for scoring images against prompts (tiny engine: tiny random CLIP)."""
    from transformers import CLIPModel, CLIPProcessor

    device, dtype = device_and_dtype()
    source = resolve_source("clip", engine, model_id, tiny_cache)
    model = CLIPModel.from_pretrained(source, dtype=dtype).to(device).eval()
    return model, CLIPProcessor.from_pretrained(source), device
