"""Quality signals (MiniLM text similarity, CLIP score) and ``albumforge reroll``.

The reroll tests build a small OUT folder for real (tiny SD renders the covers and track
art, tiny CLIP scores them, manifests written as the driver writes them), then re-roll
in-process: no Ray.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from actors.image import ImageActor
from actors.jobs import batch_of, rows_of
from actors.quality import ClipScorer, clip_score, plan_text, text_similarity
from albumforge.config import RunConfig
from albumforge.parts import read_latest
from albumforge.rows import KIND_ART, KIND_COVER, RESULT_DEFAULTS, item_seed
from ray_jobs.assemble import art_columns, cover_columns
from ray_jobs.reroll import reroll_main
from ray_jobs.resume import scan_finished
from tests.catalog_fixtures import write_manifest

ALBUMS = {"a1": "a red moon over quiet hills", "b2": "a blue sea at dawn with gulls", "c3": "a neon city in rain"}
TRACKS = 2




# ---------------------------------------------------------------- text similarity
def test_text_similarity_prefers_the_plan_of_the_concept():
    concept = "late night jazz in a rainy Tokyo bar"
    plan = {"title": "Neon Rain Sessions", "liner_notes": "Smoky jazz recorded after midnight in a small Tokyo bar.",
            "soundscape": {"genres": ["jazz"], "instruments": ["piano", "upright bass"], "production": "warm"},
            "tracks": [{"title": "Umbrella Blues"}, {"title": "Last Train to Shinjuku"}]}
    other = {"title": "Harvest Anthems", "liner_notes": "Stadium rock about tractors and wheat fields.",
             "soundscape": {"genres": ["rock"], "instruments": ["electric guitar"], "production": "loud"},
             "tracks": [{"title": "Combine"}]}
    text = plan_text(plan)
    assert "Neon Rain Sessions" in text and "upright bass" in text and "Shinjuku" in text
    near, far = text_similarity(concept, text), text_similarity(concept, plan_text(other))
    assert -1.0 <= far < near <= 1.0 and near > 0.3
    assert text_similarity(concept, concept) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- CLIP score
def test_clip_score_is_one_number_per_image_and_stable(tiny_cache):
    images = [Image.new("RGB", (64, 48), c) for c in ("red", "blue", "green")]
    prompts = ["a red square", "a blue square", "a green square"]
    scorer = ClipScorer("tiny", "x", tiny_cache)
    scores = scorer.score(images, prompts)
    assert len(scores) == 3 and all(isinstance(s, float) and -100 <= s <= 100 for s in scores)
    assert len(set(scores)) == 3
    assert clip_score(images, prompts, engine="tiny", model_id="x", tiny_cache=tiny_cache) == scores
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        scorer.score(images, prompts[:2])


# ---------------------------------------------------------------- an OUT folder made for real
IMAGE = dict(steps=2, width=64, height=48, negative_prompt="", clip_model="x")


def _cfg(out, tiny_cache) -> RunConfig:
    return RunConfig.load(preset="tiny", out=out, tiny_cache=tiny_cache, **{f"image.{k}": v for k, v in IMAGE.items()},
                          **{"image.track_art": True})


def _seed(aid, kind, no, base=0, reroll=0):
    return item_seed(aid, kind, no, base, reroll)


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_cache):
    """Three albums of a cover and two tracks with art; manifests as the driver writes them."""
    out = tmp_path_factory.mktemp("made") / "out"
    cfg = _cfg(out, tiny_cache)
    actor = ImageActor(str(out), cfg.image, str(tiny_cache))
    rows = []
    for aid, prompt in ALBUMS.items():
        rows.append({"album_id": aid, "kind": KIND_COVER, "item_no": 0, "prompt": prompt,
                     "seed": _seed(aid, KIND_COVER, 0), "reroll": 0})
        rows += [{"album_id": aid, "kind": KIND_ART, "item_no": k, "prompt": f"{prompt}, scene {k}",
                  "seed": _seed(aid, KIND_ART, k), "reroll": 0} for k in range(1, TRACKS + 1)]
    rows = [{**r, "n_items": 1, "duration_s": 0.0, **RESULT_DEFAULTS} for r in rows]
    done = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows_of(actor(batch_of(rows)))]
    assert all(r["status"] == "ok" and not math.isnan(r["score"]) for r in done)
    now = datetime.now(timezone.utc)
    for aid, prompt in ALBUMS.items():
        cover = next(r for r in done if r["album_id"] == aid and r["kind"] == KIND_COVER)
        arts = {r["item_no"]: r for r in done if r["album_id"] == aid and r["kind"] == KIND_ART}
        tracks = []
        for k in range(1, TRACKS + 1):
            audio = f"media/{aid}/track-{k:02d}.ogg"  # stands for the music (not re-rolled here)
            (out / audio).write_bytes(b"OggS")
            tracks.append({"album_id": aid, "run_id": "r0", "track_no": k, "status": "ok", "title": f"T{k}",
                           "visual_prompt": f"{prompt}, scene {k}", "seed": 100 + k, "path": audio,
                           "paths": [audio], "finished_at": now, **art_columns(arts[k])})
        album = {"album_id": aid, "run_id": "r0", "status": "ok", "concept": prompt, "seed": 0,
                 "cover_prompt": prompt, "cover_path": cover["path"], "cover_seed": cover["seed"],
                 "cover_width": cover["width"], "cover_height": cover["height"], "n_tracks": TRACKS,
                 "n_tracks_ok": TRACKS, "finished_at": now, **cover_columns(cover)}
        write_manifest(out, "tracks", aid, tracks)
        write_manifest(out, "albums", aid, [album])
    write_manifest(out, "runs", "r0", [{"run_id": "r0", "started_at": now, "config_json": cfg.model_dump_json()}])
    return out


@pytest.fixture()
def out(made, tmp_path):
    """A fresh copy of the made folder for each test (they change it)."""
    copy = tmp_path / "out"
    shutil.copytree(made, copy)
    cfg = RunConfig.model_validate_json(read_latest(copy, "runs").to_pylist()[0]["config_json"])
    now = datetime.now(timezone.utc)
    write_manifest(copy, "runs", "r0", [{"run_id": "r0", "started_at": now,
                                            "config_json": cfg.model_copy(update={"out": copy}).model_dump_json()}])
    return copy


def _images(out) -> dict:
    """(album, label) -> (seed, score, reroll, path, pixels) for every image in the manifests."""
    got = {}
    for a in read_latest(out, "albums").to_pylist():
        got[(a["album_id"], "cover")] = (a["cover_seed"], a["cover_score"], a["cover_reroll"], a["cover_path"],
                                          _px(out, a["cover_path"]))
    for t in read_latest(out, "tracks").to_pylist():
        got[(t["album_id"], f"art {t['track_no']}")] = (t["art_seed"], t["art_score"], t["art_reroll"],
                                                       t["art_path"], _px(out, t["art_path"]))
    return got


def _px(out, rel):
    return np.asarray(Image.open(out / rel)).astype(int) if rel else None


def test_manifest_fields_round_trip_through_resume(out):
    finished = scan_finished(out, list(ALBUMS))
    assert finished.albums == set(ALBUMS)  # complete albums: nothing to redo
    before = _images(out)
    assert all(v[2] == 0 and v[1] is not None for v in before.values())


def test_reroll_changes_only_low_scores(out, capsys):
    before = _images(out)
    scores = sorted(v[1] for v in before.values())
    below = (scores[3] + scores[4]) / 2  # the 4 weakest of 9 images
    low = {k for k, v in before.items() if v[1] < below}
    assert len(low) == 4

    assert reroll_main([str(out), "--below", str(below), "--dry-run"]) == 0
    assert _images(out).keys() == before.keys() and all(
        _images(out)[k][:4] == before[k][:4] for k in before)  # a dry run changes nothing

    assert reroll_main([str(out), "--below", str(below)]) == 0
    after = _images(out)
    for key, (seed, score, reroll, path, px) in after.items():
        old_seed, old_score, _, old_path, old_px = before[key]
        aid, label = key
        if key in low:
            kind, no = (KIND_COVER, 0) if label == "cover" else (KIND_ART, int(label.split()[1]))
            assert reroll == 1 and seed == _seed(aid, kind, no, reroll=1) != old_seed
            assert path == old_path and np.abs(px - old_px).mean() > 1.0  # a new image in the same place
            assert score is not None and score != old_score
        else:
            assert (seed, score, reroll, path) == (old_seed, old_score, 0, old_path)
            assert np.array_equal(px, old_px)  # untouched
    albums = read_latest(out, "albums").to_pylist()
    assert all(a["status"] == "ok" and a["error"] is None for a in albums)
    runs = read_latest(out, "runs").to_pylist()
    assert len(runs) == 2 and any(r["run_id"].startswith("reroll-") and r["n_ok"] == 4 for r in runs)
    assert "4 image(s) scored under" in capsys.readouterr().out


def test_mark_only_leaves_the_images_to_the_resume_path(out):
    before = _images(out)
    worst = min(before, key=lambda k: before[k][1])
    below = before[worst][1] + 1e-6
    assert reroll_main([str(out), "--below", repr(below), "--mark-only"]) == 0
    aid, label = worst
    finished = scan_finished(out, list(ALBUMS))
    assert aid not in finished.albums and finished.albums == set(ALBUMS) - {aid}
    if label == "cover":
        assert 0 not in finished.items[aid] and finished.rerolls[aid]["cover"] == 1
        album = next(a for a in read_latest(out, "albums").to_pylist() if a["album_id"] == aid)
        assert album["status"] == "failed" and "cover: re-roll asked" in album["error"]
    else:
        no = int(label.split()[1])
        assert no not in finished.art.get(aid, {}) and finished.rerolls[aid][f"art:{no}"] == 1
        assert set(finished.art[aid]) == set(range(1, TRACKS + 1)) - {no}
    # the music and the other images are kept: only the marked image is redone
    assert set(finished.items[aid]) >= set(range(1, TRACKS + 1))
    assert json.loads(read_latest(out, "runs").to_pylist()[0]["config_json"])["image"]["track_art"]
