"""The tiny-model builder round-trips through the same from_pretrained code as real weights."""

import json

import numpy as np
import pytest
import torch

from actors.engines import load_image, load_music, resolve_source
from actors.tiny import ensure_tiny
from albumforge.models import ModelMissing


def test_tiny_models_round_trip_through_from_pretrained(tiny_cache):
    music_dir = ensure_tiny("music", tiny_cache)
    image_dir = ensure_tiny("image", tiny_cache)
    # the folders are what save_pretrained writes, loadable by the real loaders
    assert (music_dir / "config.json").exists() and (music_dir / "tokenizer.json").exists()
    assert json.loads((image_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"

    m = load_music("tiny", "ignored", tiny_cache)
    assert type(m.model).__name__ == "MusicgenForConditionalGeneration"
    assert type(m.processor).__name__ == "MusicgenProcessor"
    assert (m.sample_rate, m.frame_rate, m.num_codebooks) == (32000, 50, 4)
    inputs = m.processor.tokenizer(["warm piano", "dark techno with acid bass"], padding=True, return_tensors="pt")
    torch.manual_seed(0)
    audio = m.model.generate(**inputs, max_new_tokens=50 + 3, do_sample=True, guidance_scale=3.0)
    assert audio.shape == (2, 1, 32000)  # (50 + 3 - 3) frames / 50 Hz = 1 s at 32 kHz
    assert torch.isfinite(audio).all()

    pipe = load_image("tiny", "ignored", tiny_cache)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    gen = [torch.Generator().manual_seed(s) for s in (1, 2)]
    images = pipe(["a red moon", "a blue sea"], num_inference_steps=2, height=32, width=48, generator=gen).images
    assert [im.size for im in images] == [(48, 32), (48, 32)]
    # different seeds and prompts give different pixels: the weights are really used
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_tiny_build_is_cached(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    folder = ensure_tiny("music", tiny_cache)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny("music", tiny_cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ModelMissing, match="music.model_id=.facebook/musicgen-small.*albumforge models fetch"):
        resolve_source("music", "real", "facebook/musicgen-small", tiny_cache)  # not cached: named, no download
