"""The actors called directly (no Ray): batching, exact durations, seeds, isolation."""

import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from actors.image import ImageActor
from actors.jobs import batch_of
from actors.music import MusicActor
from albumforge.config import ImageConfig, MusicConfig
from albumforge.rows import KIND_COVER, KIND_TRACK, RESULT_DEFAULTS


def job_rows(items):
    rows = []
    for kind, album, no, prompt, dur, seed in items:
        rows.append({"album_id": album, "kind": kind, "item_no": no, "n_items": len(items),
                     "prompt": prompt, "duration_s": dur, "seed": seed, **RESULT_DEFAULTS})
    return batch_of(rows)




@pytest.fixture(scope="module")
def music(tmp_path_factory, tiny_cache):
    return MusicActor(str(tmp_path_factory.mktemp("out")), MusicConfig(engine="tiny", model_id="x",
                      formats=["ogg", "wav"]), str(tiny_cache))


@pytest.fixture(scope="module")
def image(tmp_path_factory, tiny_cache):
    return ImageActor(str(tmp_path_factory.mktemp("out")), ImageConfig(engine="tiny", model_id="x", steps=2,
                      width=64, height=48, clip_model=None), str(tiny_cache))


def test_music_batch_gives_each_track_its_duration(music):
    batch = job_rows([
        (KIND_TRACK, "a1", 1, "warm lofi piano", 1.0, 11),
        (KIND_COVER, "a1", 0, "a cover", 0.0, 12),
        (KIND_TRACK, "a1", 2, "dark techno", 2.5, 13),
    ])
    out = music(batch)
    assert list(out["status"]) == ["ok", "pending", "ok"]  # the cover row passes through untouched
    for i, want in ((0, 1.0), (2, 2.5)):
        paths = out["paths"][i].split("|")
        assert [p.rsplit(".", 1)[1] for p in paths] == ["ogg", "wav"]
        for rel in paths:
            data, sr = sf.read(music.out.local_path(rel))
            assert sr == 32000 and len(data) == int(want * 32000)
            assert np.isfinite(data).all() and np.abs(data).max() <= 1.0
        assert json.loads(out["worker"][i])["actor"] == "MusicActor"
        assert json.loads(out["windows"][i])["windows"] == [[0.0, want]]  # fits one window: one call
        assert abs(out["lufs"][i] - (-14.0)) < 0.5  # mastered to the default target


def test_a_failing_track_is_isolated(music, monkeypatch):
    real_generate = music.m.model.generate
    tok = music.m.tokenizer

    def flaky_generate(**kwargs):
        texts = tok.batch_decode(kwargs["input_ids"], skip_special_tokens=True)
        if any("haunting choir" in t for t in texts):
            raise RuntimeError("CUDA error: simulated device fault")
        return real_generate(**kwargs)

    monkeypatch.setattr(music.m.model, "generate", flaky_generate)
    batch = job_rows([
        (KIND_TRACK, "a2", 1, "gentle folk guitar", 1.0, 1),
        (KIND_TRACK, "a2", 2, "haunting choir", 1.0, 2),
        (KIND_TRACK, "a2", 3, "calm ambient pads", 1.0, 3),
    ])
    out = music(batch)
    assert list(out["status"]) == ["ok", "failed", "ok"]
    assert "simulated device fault" in out["error"][1]
    assert out["path"][1] == "" and (music.out.local_path(out["path"][0])).exists()


def test_a_track_without_duration_fails_with_named_value(music):
    # (tracks longer than the model's window are made in windows: tests/test_music_long.py)
    out = music(job_rows([(KIND_TRACK, "a3", 1, "no length", 0.0, 1), (KIND_TRACK, "a3", 2, "fine", 0.5, 2)]))
    assert list(out["status"]) == ["failed", "ok"]
    assert "duration_s=0.0 must be positive" in out["error"][0]


def test_image_batch_is_seeded_per_image(image):
    both = image(job_rows([
        (KIND_COVER, "b1", 0, "a red moon over hills", 0.0, 7),
        (KIND_TRACK, "b1", 1, "music", 1.0, 8),
        (KIND_COVER, "b2", 0, "a blue sea at dawn", 0.0, 9),
    ]))
    assert list(both["status"]) == ["ok", "pending", "ok"]
    first = np.asarray(Image.open(image.out.local_path(both["path"][0])))
    assert Image.open(image.out.local_path(both["path"][2])).size == (64, 48)
    alone = image(job_rows([(KIND_COVER, "b1", 0, "a red moon over hills", 0.0, 7)]))
    again = np.asarray(Image.open(image.out.local_path(alone["path"][0])))
    # image k of a batch equals the same prompt and seed rendered alone (within float noise)
    assert np.abs(first.astype(int) - again.astype(int)).max() <= 2
