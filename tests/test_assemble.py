"""Album assembly steps and the row contracts, alone: no Ray, no models, no files but one."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from albumforge import manifest as mf
from albumforge import parts
from albumforge.config import RunConfig
from albumforge.parts import read_latest
from albumforge.rows import (
    KIND_ART,
    KIND_COVER,
    KIND_TRACK,
    STATUS_FAILED,
    STATUS_OK,
    failed_plan_row,
    from_batch,
    item_seed,
    job_row,
)
from ray_jobs import assemble

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)
CFG = RunConfig.load(preset="tiny")
PLAN = {"title": "Salt", "artist": "Tide", "liner_notes": "n", "cover_prompt": "sea",
        "soundscape": {"genres": ["ambient"]},
        "tracks": [{"title": f"T{k}", "music_prompt": f"m{k}", "visual_prompt": f"v{k}", "duration_s": 4.0}
                   for k in (1, 2)]}


def _done(row: dict, **results) -> dict:
    return {**row, "status": STATUS_OK, "path": f"media/a1/{row['kind']}-{row['item_no']}",
            "paths": f"media/a1/{row['kind']}-{row['item_no']}", "actual_s": 4.0, "sample_rate": 32000,
            "width": 64, "height": 64, "gen_s": 1.0, "encode_s": 0.5, "worker": '{"pid": 1}', **results}


def test_job_row_is_the_one_shape_with_its_seed():
    row = job_row("a1", KIND_ART, 2, 5, "p", 0.0, base_seed=7, reroll=1)
    assert row["seed"] == item_seed("a1", KIND_ART, 2, 7, 1) != item_seed("a1", KIND_ART, 2, 7, 0)
    assert row["status"] == "pending" and math.isnan(row["score"])
    assert set(row) == set(failed_plan_row("a1", "x"))  # every row of the stream has the same columns
    with pytest.raises(ValueError, match="not a job kind"):
        job_row("a1", "poster", 0, 1, "p", 0.0, 0)


def test_from_batch_turns_nan_and_empty_results_into_nulls():
    row = from_batch({**job_row("a1", KIND_COVER, 0, 1, "p", 0.0, 0), "prompt": ""})
    assert row["score"] is None and row["lufs"] is None and row["path"] is None
    assert row["prompt"] == ""  # only result columns: a job's own text stays as it is


def test_merge_items_prefers_this_runs_rows():
    streamed = [_done(job_row("a1", KIND_TRACK, 1, 2, "m1", 4.0, 0), gen_s=9.0)]
    recorded = [_done(job_row("a1", KIND_TRACK, 1, 2, "m1", 4.0, 0)), _done(job_row("a1", KIND_COVER, 0, 2, "s", 0, 0))]
    merged = assemble.merge_items(streamed, recorded)
    assert [(r["kind"], r["item_no"], r["gen_s"]) for r in merged] == [("track", 1, 9.0), ("cover", 0, 1.0)]


def test_track_row_of_a_lost_row_is_failed_with_the_reason():
    ok = assemble.track_row("a1", "r1", 1, PLAN["tracks"][0], _done(job_row("a1", KIND_TRACK, 1, 2, "m1", 4, 0),
                                                                 lufs=math.nan), assemble.ART_NONE, CFG.music, NOW)
    assert ok["status"] == STATUS_OK and ok["lufs"] is None and ok["paths"] == ["media/a1/track-1"]
    lost = assemble.track_row("a1", "r1", 2, PLAN["tracks"][1], None, assemble.ART_NONE, CFG.music, NOW,
                              lost="not finished: node lost")
    assert lost["status"] == STATUS_FAILED and lost["error"] == "not finished: node lost" and lost["path"] is None
    mf.check_rows([ok, lost], mf.TRACKS, "tracks")  # both are whole tracks rows


def test_album_status_names_every_missing_item():
    tracks = [{"track_no": 1, "status": STATUS_OK, "art_path": None, "art_error": None},
              {"track_no": 2, "status": STATUS_FAILED, "error": "boom", "art_path": None, "art_error": "lost"}]
    status, error = assemble.album_status(tracks, "cover row lost", 3, track_art=True)
    assert status == STATUS_FAILED
    assert error == ("cover: cover row lost; track 2: boom; art 1: missing; art 2: lost; "
                     "tracks missing from the manifest")
    assert assemble.album_status(tracks[:1], None, 1, track_art=False) == (STATUS_OK, None)


def test_cover_columns_keep_the_reroll_count_of_a_lost_cover():
    assert assemble.cover_columns(None, reroll=2) == {**assemble.COVER_NONE, "cover_reroll": 2}
    cols = assemble.cover_columns(_done(job_row("a1", KIND_COVER, 0, 1, "s", 0, 0, reroll=1), score=0.3))
    assert cols["cover_path"] and cols["cover_score"] == 0.3 and cols["cover_reroll"] == 1


def test_album_row_and_failed_album_row_are_whole_rows():
    rows = [_done(job_row("a1", KIND_COVER, 0, 3, "s", 0, 0))] + [
        _done(job_row("a1", KIND_TRACK, k, 3, f"m{k}", 4, 0)) for k in (1, 2)]
    tracks = [assemble.track_row("a1", "r1", k, PLAN["tracks"][k - 1], rows[k], assemble.ART_NONE, CFG.music, NOW)
              for k in (1, 2)]
    record = {"plan": PLAN, "director": {"seconds": 0.5}}
    album = assemble.album_row(album_id="a1", run_id="r1", source="c.txt:1", concept="sea", inputs={}, seed=0,
                               record=record, tracks=tracks, cover=assemble.cover_columns(rows[0]),
                               status=STATUS_OK, error=None, seconds=assemble.stage_seconds(rows), cfg=CFG,
                               director=dict.fromkeys(("director", "director_model", "director_attempts",
                                                       "tokens_in", "tokens_out", "director_json")), now=NOW)
    mf.check_rows([album], mf.ALBUMS, "albums")
    assert album["n_tracks_ok"] == 2 and album["music_s"] == 2.0 and album["image_s"] == 1.0 and album["plan_s"] == 0.5
    failed = assemble.failed_album_row(album_id="a2", run_id="r1", source="c.txt:2", concept="x", inputs=None,
                                       error="empty", cfg=CFG, director={}, now=NOW)
    mf.check_rows([failed], mf.ALBUMS, "albums")


def test_manifest_writes_reject_misspelt_and_missing_keys(tmp_path):
    row = {**mf.null_row("runs"), "run_id": "r1"}
    parts.write_row(tmp_path, "runs", row)
    with pytest.raises(mf.ManifestError, match=r"unknown keys \['n_okk'\]"):
        parts.write_row(tmp_path, "runs", {**row, "n_okk": 1})
    with pytest.raises(mf.ManifestError, match=r"missing keys \['wall_s'\]"):
        parts.write_row(tmp_path, "runs", {k: v for k, v in row.items() if k != "wall_s"})
    with pytest.raises(mf.ManifestError, match=r"missing keys \['duration_s'"):
        parts.write_album(tmp_path, {**mf.null_row("albums"), "album_id": "a1"},
                          [{**{k: v for k, v in mf.null_row("tracks").items() if k != "duration_s"}, "album_id": "a1"}])
    assert read_latest(tmp_path, "runs")["run_id"].to_pylist() == ["r1"]
    assert len(parts.manifest_files(tmp_path, "runs")) == 1 and not parts.manifest_files(tmp_path, "albums")


def test_cover_item_reads_back_what_cover_columns_wrote():
    row = _done(job_row("a1", KIND_COVER, 0, 1, "s", 0, 0, reroll=2), score=0.4, prompt_note="chunked")
    back = assemble.cover_item(assemble.cover_columns(row))
    assert assemble.cover_columns(back) == assemble.cover_columns(row)
