"""Image half of "media a listener would keep": house style, checkpoints, LoRA, textual
inversion, two-pass hires covers, per-track art, long prompts. Actors are called in-process
on the tiny random SD (2 steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from actors.engines import image_source, load_image
from actors.image import ImageActor
from actors.jobs import batch_of
from actors.tiny import build_tiny_lora, build_tiny_textual_inversion, ensure_tiny
from albumforge.config import STYLES_DIR, ImageConfig, load_style
from albumforge.rows import KIND_ART, KIND_COVER, KIND_TRACK, RESULT_DEFAULTS

SMALL = dict(steps=2, width=64, height=48, negative_prompt="", clip_model=None)


def job_rows(items):
    return batch_of([
        {"album_id": album, "kind": kind, "item_no": no, "n_items": len(items), "prompt": prompt,
         "duration_s": 0.0, "seed": seed, **RESULT_DEFAULTS}
        for kind, album, no, prompt, seed in items
    ])


def make_actor(out, tiny_cache, **kw):
    return ImageActor(str(out), ImageConfig(engine="tiny", model_id="x", **{**SMALL, **kw}), str(tiny_cache))


def pixels(actor, rel) -> np.ndarray:
    return np.asarray(Image.open(actor.out.local_path(rel))).astype(int)


class Recorder:
    """Wraps a pipeline: records the keyword arguments of every call, delegates the rest."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)




# ---------------------------------------------------------------- house style
def test_shipped_styles_load_and_none_is_empty():
    names = sorted(p.stem for p in STYLES_DIR.glob("*.yaml"))
    assert "none" in names and len(names) >= 3
    for name in names:
        style = load_style(name)
        assert (style.prefix and style.negative_prompt) or name == "none"
    none = load_style("none")
    assert none.apply("a red moon") == "a red moon" and not none.negative_prompt


def test_unknown_style_is_a_named_error(tmp_path):
    with pytest.raises(ValueError, match=r"style='vaporwave'.*none"):
        ImageConfig(style="vaporwave")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prefx: typo\n")
    with pytest.raises(ValueError, match="not a valid style preset"):
        ImageConfig(style=str(bad))


def test_style_prefix_and_negative_prompt_reach_the_pipeline_call(tmp_path, tiny_cache):
    style = tmp_path / "label.yaml"
    style.write_text("prefix: lofi sleeve\nsuffix: grain\nnegative_prompt: neon\n")
    cfg = ImageConfig(style=str(style), negative_prompt="text", steps=2, width=64, height=48, clip_model=None)
    assert cfg.style_words() == ("lofi sleeve", "grain", "neon, text")
    actor = ImageActor(str(tmp_path / "out"), cfg, str(tiny_cache))
    actor.pipe = Recorder(actor.pipe)
    done = actor(job_rows([(KIND_COVER, "a1", 0, "a red moon", 1), (KIND_ART, "a1", 1, "a blue sea", 2)]))
    assert list(done["status"]) == ["ok", "ok"]
    (call,) = actor.pipe.calls  # cover and art in one batched pipeline call
    assert call["prompt"] == ["lofi sleeve, a red moon, grain", "lofi sleeve, a blue sea, grain"]
    assert call["negative_prompt"] == ["neon, text", "neon, text"]
    assert list(done["prompt_note"]) == ["", ""]


# ---------------------------------------------------------------- covers and track art
def test_covers_and_track_art_share_a_batch_and_name_their_files(tmp_path, tiny_cache):
    actor = make_actor(tmp_path, tiny_cache, batch_size=2)
    actor.pipe = Recorder(actor.pipe)
    done = actor(job_rows([
        (KIND_COVER, "a1", 0, "a red moon", 1), (KIND_TRACK, "a1", 1, "music", 2),
        (KIND_ART, "a1", 1, "a blue sea", 3), (KIND_ART, "a1", 12, "a green hill", 4),
    ]))
    assert list(done["status"]) == ["ok", "pending", "ok", "ok"]
    assert list(done["path"]) == ["media/a1/cover.png", "", "media/a1/track-01.png", "media/a1/track-12.png"]
    assert [len(c["prompt"]) for c in actor.pipe.calls] == [2, 1]  # batch_size images per call


def test_a_failing_image_is_a_failed_row_and_the_rest_completes(tmp_path, tiny_cache):
    class Flaky(Recorder):
        def __call__(self, *args, **kwargs):
            if any("poison" in p for p in kwargs["prompt"]):
                raise RuntimeError("bad prompt")
            return self.pipe(*args, **kwargs)

    actor = make_actor(tmp_path, tiny_cache)
    actor.pipe = Flaky(actor.pipe)
    done = actor(job_rows([(KIND_COVER, "a1", 0, "poison", 1), (KIND_ART, "a1", 1, "a blue sea", 2)]))
    assert list(done["status"]) == ["failed", "ok"]
    assert "bad prompt" in done["error"][0]


# ---------------------------------------------------------------- checkpoints, LoRA, embeddings
def test_lora_loads_and_changes_the_output(tmp_path, tiny_cache):
    lora = build_tiny_lora(ensure_tiny("image", tiny_cache), tmp_path / "lora", seed=1)
    rows = [(KIND_COVER, "a1", 0, "a red moon over hills", 7)]
    base = make_actor(tmp_path / "base", tiny_cache)
    styled = make_actor(tmp_path / "lora_out", tiny_cache, lora_path=str(lora), lora_scale=1.0)
    off = make_actor(tmp_path / "off", tiny_cache, lora_path=str(lora), lora_scale=0.0)
    a, b, c = (act(job_rows(rows)) for act in (base, styled, off))
    assert a["status"][0] == b["status"][0] == c["status"][0] == "ok"
    pa, pb, pc = pixels(base, a["path"][0]), pixels(styled, b["path"][0]), pixels(off, c["path"][0])
    assert np.abs(pa - pb).mean() > 1.0  # the LoRA changes the image
    assert np.abs(pa - pc).max() <= 2  # at scale 0 it is the base model again


def test_textual_inversion_token_is_learned(tmp_path, tiny_cache):
    emb = build_tiny_textual_inversion(tmp_path / "house.safetensors", token="<house>")
    cfg = ImageConfig(textual_inversion=[str(emb)], **{k: v for k, v in SMALL.items()})
    actor = ImageActor(str(tmp_path), cfg, str(tiny_cache))
    ids = actor.pipe.tokenizer("<house>", add_special_tokens=False).input_ids
    assert len(ids) == 1 and ids[0] >= 514  # one new token, not its bytes
    done = actor(job_rows([(KIND_COVER, "a1", 0, "<house> a red moon", 1), (KIND_COVER, "a2", 0, "a red moon", 1)]))
    assert list(done["status"]) == ["ok", "ok"]
    assert np.abs(pixels(actor, done["path"][0]) - pixels(actor, done["path"][1])).mean() > 0.5


def test_checkpoint_kind_is_picked_by_what_the_path_is(tmp_path, tiny_cache, monkeypatch):
    from diffusers import StableDiffusionPipeline

    folder = ensure_tiny("image", tiny_cache)
    assert image_source("real", str(folder), tiny_cache) == ("pretrained", str(folder))
    assert image_source("real", "org/some-model", tiny_cache) == ("pretrained", "org/some-model")
    with pytest.raises(FileNotFoundError, match="model_id='.*missing.safetensors'"):
        image_source("real", str(tmp_path / "missing.safetensors"), tiny_cache)
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(ValueError, match="model_index.json"):
        image_source("real", str(tmp_path / "not-a-pipeline"), tiny_cache)
    ckpt = tmp_path / "house.safetensors"
    ckpt.write_bytes(b"")
    assert image_source("real", str(ckpt), tiny_cache) == ("single_file", str(ckpt))
    seen = {}

    def fake_single_file(path, **kwargs):  # no LDM-format tiny checkpoint: check the call, load the tiny SD
        seen.update(path=path, **kwargs)
        return StableDiffusionPipeline.from_pretrained(folder)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", staticmethod(fake_single_file))
    pipe = load_image("real", str(ckpt), tiny_cache, single_file_config=str(folder))
    assert seen["path"] == str(ckpt) and seen["config"] == str(folder)
    assert isinstance(pipe, StableDiffusionPipeline)


# ---------------------------------------------------------------- two-pass hires
def test_two_pass_output_has_the_asked_size(tmp_path, tiny_cache):
    cfg = ImageConfig(hires_scale=2.0, hires_steps=4, hires_strength=0.5, **SMALL)
    assert cfg.hires_size() == (128, 96)
    actor = ImageActor(str(tmp_path), cfg, str(tiny_cache))
    assert actor.hires_pipe.unet is actor.pipe.unet  # shared components, not a second load
    done = actor(job_rows([(KIND_COVER, "a1", 0, "a red moon", 1), (KIND_ART, "a1", 1, "a blue sea", 2)]))
    assert list(done["status"]) == ["ok", "ok"]
    assert [(int(w), int(h)) for w, h in zip(done["width"], done["height"])] == [(128, 96), (128, 96)]
    assert Image.open(tmp_path / done["path"][1]).size == (128, 96)


def test_hires_size_must_be_a_multiple_of_8():
    with pytest.raises(ValueError, match=r"hires_scale=1.25 gives height 48 x 1.25 = 60.*multiple of 8"):
        ImageConfig(width=64, height=48, hires_scale=1.25)
    with pytest.raises(ValueError, match="width=60 must be a multiple of 8"):
        ImageConfig(width=60)
    with pytest.raises(ValueError, match="rounds down to 0"):
        ImageConfig(hires_scale=2.0, hires_steps=2, hires_strength=0.3)


# ---------------------------------------------------------------- prompts past 77 tokens
def test_long_prompts_are_chunked_and_noted(tmp_path, tiny_cache):
    actor = make_actor(tmp_path, tiny_cache)
    actor.pipe = Recorder(actor.pipe)
    long = "a vast neon city at night seen from a rooftop garden, " * 4
    n = len(actor.pipe.tokenizer(long, add_special_tokens=False).input_ids)  # byte tokens, spaces folded
    assert 150 < n <= 225
    done = actor(job_rows([(KIND_COVER, "a1", 0, long, 1), (KIND_ART, "a1", 1, "a blue sea", 2)]))
    assert list(done["status"]) == ["ok", "ok"]
    assert done["prompt_note"][0] == f"prompt chunked: {n} tokens in 3 chunks of 75"
    assert done["prompt_note"][1] == ""
    (call,) = actor.pipe.calls
    assert "prompt" not in call and call["prompt_embeds"].shape[:2] == (2, 3 * 77)
    assert call["negative_prompt_embeds"].shape == call["prompt_embeds"].shape


def test_chunked_encoding_of_a_short_prompt_is_the_pipelines_own(tmp_path, tiny_cache):
    actor = make_actor(tmp_path, tiny_cache)
    tok = actor.pipe.tokenizer
    ids = tok("a red moon", add_special_tokens=False).input_ids
    mine = actor._embed([ids], 1, 75)
    theirs, _ = actor.pipe.encode_prompt("a red moon", "cpu", 1, False)
    torch.testing.assert_close(mine, theirs)


def test_long_prompt_past_the_cap_or_truncated_is_noted(tmp_path, tiny_cache):
    long = "x" * 300
    capped = make_actor(tmp_path / "c", tiny_cache, max_prompt_tokens=150)
    done = capped(job_rows([(KIND_COVER, "a1", 0, long, 1)]))
    assert done["status"][0] == "ok"
    assert done["prompt_note"][0].startswith("prompt chunked: 150 tokens in 2 chunks of 75; cut at max_prompt_tokens=150")
    cut = make_actor(tmp_path / "t", tiny_cache, long_prompts="truncate")
    done = cut(job_rows([(KIND_COVER, "a1", 0, long, 1)]))
    assert done["status"][0] == "ok"
    assert done["prompt_note"][0].startswith("prompt truncated: 300 tokens, CLIP kept 75; dropped 'xxx")
