"""The CUDA path (fp16) of the actors, on the tiny random-weight models: the GPU twins of
tests/test_actors.py, tests/test_music_long.py and tests/test_image_style.py.

Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``python -m pytest tests/test_gpu.py -m gpu``. Tolerances are fp16's, not fp32's: the
same seed must still give the same image and the same codes must decode to the same audio.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from actors.image import ImageActor
from actors.jobs import batch_of
from actors.music import MusicActor
from albumforge.config import ImageConfig, MusicConfig
from albumforge.rows import KIND_ART, KIND_COVER, KIND_TRACK, RESULT_DEFAULTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

WINDOW, STRIDE, FADE = 2.0, 1.2, 0.4  # as tests/test_music_long.py: a 3.3 s track takes 3 generate() calls


def job_rows(items):
    return batch_of([{"album_id": album, "kind": kind, "item_no": no, "n_items": len(items), "prompt": prompt,
                      "duration_s": dur, "seed": seed, **RESULT_DEFAULTS}
                     for kind, album, no, prompt, dur, seed in items])


def float_params(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]


# ---------------------------------------------------------------- music
@pytest.fixture(scope="module")
def music(tmp_path_factory, tiny_cache):
    return MusicActor(str(tmp_path_factory.mktemp("out")), MusicConfig(engine="tiny", model_id="x",
                      window_s=WINDOW, stride_s=STRIDE, crossfade_s=FADE, formats=["ogg", "wav"]), str(tiny_cache))


def test_music_model_is_fp16_on_cuda(music):
    m = music.m
    assert m.device == "cuda"
    params = float_params(m.model)
    assert params
    assert {p.device.type for _, p in params} == {"cuda"}
    assert m.model.dtype == torch.float16
    for part in (m.model.decoder, m.model.audio_encoder):  # the sampling loop and the codec: all fp16
        wrong = [n for n, p in float_params(part) if p.dtype != torch.float16]
        assert not wrong, f"{type(part).__name__} has non-fp16 parameters: {wrong[:5]}"
    # the text encoder may keep a module in fp32 only where its class asks for it
    keep = set(getattr(m.model.text_encoder, "_keep_in_fp32_modules", None) or ())
    wrong = [n for n, p in float_params(m.model.text_encoder)
             if p.dtype != torch.float16 and not any(k in n.split(".") for k in keep)]
    assert not wrong, f"text encoder has non-fp16 parameters: {wrong[:5]}"


def test_music_batch_on_cuda_gives_each_track_its_duration(music):
    out = music(job_rows([
        (KIND_TRACK, "g1", 1, "warm lofi piano", 1.0, 11),  # one window
        (KIND_COVER, "g1", 0, "a cover", 0.0, 12),
        (KIND_TRACK, "g1", 2, "dark techno", 3.3, 13),  # 3 windows: continuation on the GPU, last one trimmed
    ]))
    assert list(out["status"]) == ["ok", "pending", "ok"], list(out["error"])
    expected_windows = {0: [[0.0, 1.0]], 2: [[0.0, 2.0], [1.2, 3.2], [2.4, 3.3]]}
    for i, want_s in ((0, 1.0), (2, 3.3)):
        paths = out["paths"][i].split("|")
        assert [p.rsplit(".", 1)[1] for p in paths] == ["ogg", "wav"]
        for rel in paths:
            data, sr = sf.read(music.out.local_path(rel))
            assert sr == 32000 and len(data) == round(want_s * 32000), rel
            assert np.isfinite(data).all() and 0 < np.abs(data).max() <= 1.0, rel
        plan = json.loads(out["windows"][i])
        assert np.allclose(plan["windows"], expected_windows[i])
        assert out["actual_s"][i] == pytest.approx(want_s)
        assert json.loads(out["worker"][i])["actor"] == "MusicActor"
        # mastering zeroes NaNs: silent (NaN) audio would measure -inf LUFS, not the target
        assert abs(out["lufs"][i] - (-14.0)) < 0.5, out["lufs"][i]


def test_raw_cuda_audio_is_finite_and_its_codes_decode_back(music):
    """Before mastering (which would hide NaNs): fp16 audio is finite and not silent, the codes
    read from the decoder are valid and are the ones generate() decoded, and a continuation
    starts with the previous window's tail."""
    m, hop, ctx = music.m, music.hop, music.context
    inputs = m.tokenizer(["jazz trio with brushed drums", "epic orchestral score"], padding=True,
                         return_tensors="pt").to(m.device)
    torch.manual_seed(0)
    with torch.inference_mode():
        first, codes = music._window(inputs, None, 50)
        assert codes.device.type == "cuda" and not codes.is_floating_point()
        codebook_size = m.model.config.audio_encoder.codebook_size
        assert 0 <= int(codes.min()) and int(codes.max()) < codebook_size
        assert first.shape == (2, 50 * hop) and first.dtype == np.float32
        assert np.isfinite(first).all() and np.abs(first).max() > 0
        decoded = m.model.audio_encoder.decode(codes[None], audio_scales=[None, None]).audio_values[:, 0]
        decoded = decoded.float().cpu().numpy()
        peak = float(np.abs(first).max())
        print(f"\n[gpu] decode-back max diff {np.abs(decoded - first).max():.3g} (peak {peak:.3g})")
        assert np.abs(decoded - first).max() <= 1e-3 * peak + 1e-5
        second, new = music._window(inputs, codes[:, :, -ctx:], 30)
    assert second.shape == (2, (ctx + 30) * hop) and new.shape == (2, m.num_codebooks, 30)
    assert np.isfinite(second).all()
    warm = 10 * hop  # the codec's first frames of a call differ (its state starts empty)
    tail = first[:, -ctx * hop:]
    print(f"[gpu] continuation overlap max diff {np.abs(second[:, warm: ctx * hop] - tail[:, warm:]).max():.3g}")
    assert np.abs(second[:, warm: ctx * hop] - tail[:, warm:]).max() <= 1e-2 * peak + 1e-5
    assert np.abs(second[:, ctx * hop:]).max() > 0


def test_music_batch_on_cuda_is_reproducible(music):
    cols = [np.array(["upbeat funk groove", "calm ambient pads"]), np.array([1.0, 2.5]), np.array([7, 8])]
    a = music._generate(cols)
    b = music._generate(cols)
    for (x, _, plan_x), (y, _, plan_y) in zip(a, b):
        assert plan_x == plan_y and x.shape == y.shape
        assert np.isfinite(x).all()
        print(f"\n[gpu] same batch twice: max diff {np.abs(x - y).max():.3g} (peak {np.abs(x).max():.3g})")
        assert np.abs(x - y).max() <= 1e-3 * np.abs(x).max() + 1e-5


def test_generate_on_cuda_avoids_cudnn_attention(music):
    """cuDNN attention builds a plan for every new key length, i.e. at every decoding step of a
    first call: 10x slower than the CPU on the tiny model (actors.music._ATTENTION)."""
    from torch.profiler import ProfilerActivity, profile

    m = music.m
    inputs = m.tokenizer(["slow blues in a minor"], padding=True, return_tensors="pt").to(m.device)
    frames = 137  # a length no other test used: no plan of any backend is cached for it
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        audio, _ = music._window(inputs, None, frames)
    ops = {e.key for e in prof.key_averages()}
    assert any("scaled_dot_product" in k for k in ops), "no SDPA op seen: the check below would prove nothing"
    assert not [k for k in ops if "cudnn_attention" in k]
    assert np.isfinite(audio).all()


# ---------------------------------------------------------------- images
SMALL = dict(steps=2, width=64, height=48, negative_prompt="")


@pytest.fixture(scope="module")
def image(tmp_path_factory, tiny_cache):
    return ImageActor(str(tmp_path_factory.mktemp("out")), ImageConfig(engine="tiny", model_id="x",
                      **{**SMALL, "clip_model": "x"}), str(tiny_cache))


def pixels(actor, rel) -> np.ndarray:
    return np.asarray(Image.open(actor.out.local_path(rel))).astype(int)


def test_image_pipeline_is_fp16_on_cuda(image):
    pipe = image.pipe
    assert pipe.device.type == "cuda"
    for name in ("unet", "vae", "text_encoder"):
        part = getattr(pipe, name)
        kinds = {(p.device.type, p.dtype) for _, p in float_params(part)}
        assert kinds == {("cuda", torch.float16)}, f"{name}: {kinds}"
    assert image.scorer is not None, "tiny CLIP did not load: images would go unscored"
    assert image.scorer.device == "cuda"
    assert {(p.device.type, p.dtype) for _, p in float_params(image.scorer.model)} == {("cuda", torch.float16)}


def test_image_batch_on_cuda_is_seeded_per_image(image):
    both = image(job_rows([
        (KIND_COVER, "h1", 0, "a red moon over hills", 0.0, 7),
        (KIND_TRACK, "h1", 1, "music", 1.0, 8),
        (KIND_COVER, "h2", 0, "a blue sea at dawn", 0.0, 9),
    ]))
    assert list(both["status"]) == ["ok", "pending", "ok"], list(both["error"])
    first, other = pixels(image, both["path"][0]), pixels(image, both["path"][2])
    assert Image.open(image.out.local_path(both["path"][2])).size == (64, 48)
    for px in (first, other):  # fp16 NaNs reach the PNG as a black (or flat) image
        assert px.std() > 1 and px.max() > 0
    assert np.abs(first - other).max() > 10  # another seed and prompt: another image
    for i in (0, 2):
        assert math.isfinite(both["score"][i]) and -100 <= both["score"][i] <= 100, both["score"][i]
    alone = image(job_rows([(KIND_COVER, "h1", 0, "a red moon over hills", 0.0, 7)]))
    assert alone["status"][0] == "ok"
    again = pixels(image, alone["path"][0])
    # image k of a batch equals the same prompt and seed rendered alone: within fp16 noise
    # (a batch of 2 and of 1 take different GPU kernels)
    diff = np.abs(first - again)
    print(f"\n[gpu] same seed, other batch: max {diff.max()} mean {diff.mean():.3f} (0..255)")
    assert diff.max() <= 4 and diff.mean() <= 0.5
    assert alone["score"][0] == pytest.approx(both["score"][0], abs=0.5)


def test_chunked_prompts_on_cuda(image):
    actor = image
    tok = actor.pipe.tokenizer
    ids = tok("a red moon", add_special_tokens=False).input_ids
    mine = actor._embed([ids], 1, 75)
    theirs, _ = actor.pipe.encode_prompt("a red moon", "cuda", 1, False)
    assert mine.device.type == "cuda" and mine.dtype == torch.float16
    torch.testing.assert_close(mine, theirs)
    long = "a vast neon city at night seen from a rooftop garden, " * 4
    n = len(tok(long, add_special_tokens=False).input_ids)
    done = actor(job_rows([(KIND_COVER, "c1", 0, long, 0.0, 1), (KIND_ART, "c1", 1, "a blue sea", 0.0, 2)]))
    assert list(done["status"]) == ["ok", "ok"], list(done["error"])
    assert done["prompt_note"][0] == f"prompt chunked: {n} tokens in 3 chunks of 75"
    for i in (0, 1):
        px = pixels(actor, done["path"][i])
        assert px.std() > 1 and math.isfinite(done["score"][i])


def test_two_pass_hires_on_cuda(tmp_path, tiny_cache):
    actor = ImageActor(str(tmp_path), ImageConfig(engine="tiny", model_id="x", hires_scale=2.0, hires_steps=4,
                                                  hires_strength=0.5, **SMALL), str(tiny_cache))
    assert actor.hires_pipe.unet is actor.pipe.unet and actor.hires_pipe.device.type == "cuda"
    done = actor(job_rows([(KIND_COVER, "d1", 0, "a red moon", 0.0, 1), (KIND_ART, "d1", 1, "a blue sea", 0.0, 2)]))
    assert list(done["status"]) == ["ok", "ok"], list(done["error"])
    for i in (0, 1):
        assert Image.open(tmp_path / done["path"][i]).size == (128, 96)
        assert pixels(actor, done["path"][i]).std() > 1
