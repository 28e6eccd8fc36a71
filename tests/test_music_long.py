"""Tracks past the model's window: exact durations, real continuation, seams without clicks.

The tiny MusicGen runs with 2 s windows and a 1.2 s stride (0.8 s of context), so a 5 s
track takes four generate() calls; everything runs in-process (no Ray).
"""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from actors.engines import music_class
from actors.jobs import batch_of
from actors.music import MusicActor
from albumforge.config import MusicConfig
from albumforge.rows import KIND_COVER, KIND_TRACK, RESULT_DEFAULTS

WINDOW, STRIDE, FADE = 2.0, 1.2, 0.4




@pytest.fixture(scope="module")
def music(tmp_path_factory, tiny_cache):
    return MusicActor(str(tmp_path_factory.mktemp("out")), MusicConfig(engine="tiny", model_id="x",
                      window_s=WINDOW, stride_s=STRIDE, crossfade_s=FADE, formats=["flac", "ogg"]), str(tiny_cache))


def rows(items):
    return batch_of([{"album_id": album, "kind": kind, "item_no": no, "n_items": len(items), "prompt": prompt,
                      "duration_s": dur, "seed": seed, **RESULT_DEFAULTS}
                     for kind, album, no, prompt, dur, seed in items])


def test_durations_are_exact_past_the_window(music):
    out = music(rows([
        (KIND_TRACK, "l1", 1, "warm lofi piano", 1.0, 1),  # one window: the single-call path
        (KIND_COVER, "l1", 0, "a cover", 0.0, 2),
        (KIND_TRACK, "l1", 2, "dark techno", 3.3, 3),  # 3 windows, the last one trimmed
        (KIND_TRACK, "l1", 3, "calm ambient pads", 5.05, 4),  # 4 windows, not a whole frame
    ]))
    assert list(out["status"]) == ["ok", "pending", "ok", "ok"], list(out["error"])
    expected_windows = {
        0: [[0.0, 1.0]],
        2: [[0.0, 2.0], [1.2, 3.2], [2.4, 3.3]],
        3: [[0.0, 2.0], [1.2, 3.2], [2.4, 4.4], [3.6, 5.05]],
    }
    for i, want_s in ((0, 1.0), (2, 3.3), (3, 5.05)):
        for rel in out["paths"][i].split("|"):
            data, sr = sf.read(music.out.local_path(rel))
            assert sr == 32000 and len(data) == round(want_s * 32000), rel
        plan = json.loads(out["windows"][i])
        assert (plan["window_s"], plan["stride_s"], plan["crossfade_s"]) == (WINDOW, STRIDE, FADE)
        assert np.allclose(plan["windows"], expected_windows[i])
        assert out["actual_s"][i] == pytest.approx(want_s)
        assert abs(out["lufs"][i] - (-14.0)) < 0.5


def test_continuation_takes_the_previous_codes_as_its_start(music):
    m, hop, ctx = music.m, music.hop, music.context
    inputs = m.tokenizer(["jazz trio with brushed drums", "epic orchestral score"], padding=True,
                                   return_tensors="pt")
    torch.manual_seed(0)
    with torch.inference_mode():
        first, codes = music._window(inputs, None, 50)
        # the codes read back from the decoder are the ones generate() decoded
        decoded = m.model.audio_encoder.decode(codes[None], audio_scales=[None, None]).audio_values[:, 0]
        assert np.abs(decoded.numpy() - first).max() < 1e-5
        second, new = music._window(inputs, codes[:, :, -ctx:], 30)
    assert second.shape == (2, (ctx + 30) * hop) and new.shape == (2, m.num_codebooks, 30)
    # the continuation's output starts with the prompt's audio: past the codec's warm-up
    # (a few frames) it is the first window's tail again, sample for sample
    tail = first[:, -ctx * hop:]
    warm = 10 * hop
    assert np.abs(second[:, warm : ctx * hop] - tail[:, warm:]).max() < 1e-4
    assert np.abs(second[:, ctx * hop :]).max() > 0  # and goes on with new audio


def test_seams_have_no_clicks(music, monkeypatch):
    windows = []  # the audio of each generate() call, as the stitcher received it
    real_window = music._window

    def spy(*args):
        audio, codes = real_window(*args)
        windows.append(audio[0].copy())
        return audio, codes

    monkeypatch.setattr(music, "_window", spy)
    torch.manual_seed(1)
    [(audio, _, plan)] = music._generate([np.array(["upbeat funk groove"]), np.array([4.5]), np.array([7])])
    sr, hop = music.m.sample_rate, music.hop
    assert len(plan["windows"]) == len(windows) == 4 and len(audio) == int(4.5 * sr)
    step = np.abs(np.diff(audio))
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))
    for (start_s, end_s), window in zip(plan["windows"][1:], windows[1:]):
        start, end = int(round(start_s * sr)), int(round(end_s * sr))
        # the crossfade sits in the middle of the context that starts each later window
        mid, half = start + int(plan["context_s"] * sr) // 2, int(FADE * sr) // 2
        seam = step[mid - half - 64 : mid + half + 64].max()
        around = max(step[mid - half - 3200 : mid - half].max(), step[mid + half : mid + half + 3200].max())
        assert seam <= around * 1.05, f"jump {seam:.4f} at the seam near {mid / sr:.2f} s vs {around:.4f} around"
        assert abs(20 * np.log10(rms(audio[mid - half : mid + half]) / rms(audio[mid - 3 * half : mid - half]))) < 1
        # across the whole seam the track is the new window's audio (= the old one's: same codes):
        # nothing shifted, nothing doubled, so nothing to hear
        warm = 10 * hop  # the codec's first frames of a call differ (its state starts empty)
        assert np.abs(audio[start + warm : end] - window[warm : end - start]).max() < 1e-4


def test_window_past_the_model_is_a_named_error(tiny_cache, tmp_path):
    with pytest.raises(ValueError, match=r"window_s=45\.0 needs 2254 decoder positions"):
        MusicActor(str(tmp_path), MusicConfig(engine="tiny", model_id="x", window_s=45.0, stride_s=18.0),
                   str(tiny_cache))


# ---------------------------------------------------------------- model choice
def test_music_class_follows_the_config_model_type():
    assert music_class("musicgen").__name__ == "MusicgenForConditionalGeneration"
    assert music_class("musicgen_melody").__name__ == "MusicgenMelodyForConditionalGeneration"
    with pytest.raises(ValueError, match="model_type='t5'"):
        music_class("t5")


@pytest.fixture(scope="module")
def tiny_melody(tmp_path_factory, tiny_cache):
    """A tiny musicgen-melody checkpoint from the tiny MusicGen's parts, saved like the hub's
    (its preprocessor config names the chroma feature extractor, which needs torchaudio)."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        MusicgenMelodyForConditionalGeneration,
    )

    from actors.tiny import ensure_tiny

    src = ensure_tiny("music", tiny_cache)
    base = AutoConfig.from_pretrained(src)
    keep = ("vocab_size", "max_position_embeddings", "num_hidden_layers", "ffn_dim", "num_attention_heads",
            "hidden_size", "num_codebooks", "pad_token_id", "bos_token_id", "audio_channels")
    decoder = MusicgenMelodyDecoderConfig(**{k: getattr(base.decoder, k) for k in keep})
    config = MusicgenMelodyConfig(text_encoder=base.text_encoder.to_dict(), audio_encoder=base.audio_encoder.to_dict(),
                                  decoder=decoder.to_dict(), chroma_length=20)
    torch.manual_seed(0)
    model = MusicgenMelodyForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = model.generation_config.pad_token_id = base.decoder.pad_token_id
    folder = tmp_path_factory.mktemp("tiny-musicgen-melody")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(src).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor", "processor_class": "MusicgenMelodyProcessor",
        "sampling_rate": 32000, "feature_size": 12}))
    return folder


def test_melody_checkpoint_loads_by_its_model_type_and_continues(tiny_melody, tmp_path):
    actor = MusicActor(str(tmp_path), MusicConfig(engine="real", model_id=str(tiny_melody), window_s=1.0, stride_s=0.6,
                                                     crossfade_s=0.2, formats=["wav"]), str(tmp_path))
    assert type(actor.m.model).__name__ == "MusicgenMelodyForConditionalGeneration"
    assert actor.m.prefix_positions == 20  # chroma frames come before the audio in its decoder
    out = actor(rows([(KIND_TRACK, "m1", 1, "jazz trio", 1.7, 5)]))
    assert out["status"][0] == "ok", out["error"][0]
    assert sf.info(actor.out.local_path(out["path"][0])).frames == int(1.7 * 32000)
    assert len(json.loads(out["windows"][0])["windows"]) == 3
