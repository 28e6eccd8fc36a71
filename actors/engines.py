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


@dataclass
class MusicModel:
    model: object  # MusicgenForConditionalGeneration
    processor: object  # MusicgenProcessor
    device: str
    sample_rate: int
    frame_rate: int  # audio frames (decoder steps) per second
    num_codebooks: int
    max_positions: int  # decoder positions: caps the tokens of one generate() call


def load_music(engine: str, model_id: str, tiny_cache: Path) -> MusicModel:
    from transformers import MusicgenForConditionalGeneration, MusicgenProcessor

    device, dtype = device_and_dtype()
    source = resolve_source("music", engine, model_id, tiny_cache)
    model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=dtype).to(device).eval()
    processor = MusicgenProcessor.from_pretrained(source)
    audio = model.config.audio_encoder
    return MusicModel(
        model=model,
        processor=processor,
        device=device,
        sample_rate=int(audio.sampling_rate),
        frame_rate=int(audio.frame_rate),
        num_codebooks=int(model.config.decoder.num_codebooks),
        max_positions=int(model.config.decoder.max_position_embeddings),
    )


def load_image(engine: str, model_id: str, tiny_cache: Path):
    """A ``StableDiffusionPipeline`` on the best device, safety checker as the weights ship it."""
    from diffusers import StableDiffusionPipeline

    device, dtype = device_and_dtype()
    source = resolve_source("image", engine, model_id, tiny_cache)
    pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
