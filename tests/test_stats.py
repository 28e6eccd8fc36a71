"""``albumforge stats``: the polars summary of an OUT folder."""

from __future__ import annotations

from dataclasses import replace

import pytest
from catalog_fixtures import ALBUMS, make_out, resume

from albumforge.parts import read_latest
from catalog.commands import stats_main
from catalog.stats import compute_stats, format_stats, printable


@pytest.fixture
def sample(tmp_path):
    return make_out(tmp_path / "out")


def test_stats_count_what_the_manifests_hold(sample):
    s = compute_stats(sample.out)
    ok = sample.ok
    assert (s["albums_ok"], s["albums_failed"]) == (len(ok), len(sample.failed))
    assert s["tracks_ok"] == sum(len(a.ok_tracks) for a in ok)
    assert s["tracks_failed"] == sum(len(a.tracks) - len(a.ok_tracks) for a in ok)
    n_ok = [len(a.ok_tracks) for a in ok]
    assert s["tracks_per_album"] == {"mean": pytest.approx(sum(n_ok) / len(n_ok)), "min": min(n_ok), "max": max(n_ok)}
    runs = read_latest(sample.out, "runs").to_pylist()
    assert s["wall_minutes_per_album"] == pytest.approx(sum(r["wall_s"] for r in runs) / 60 / sum(r["n_ok"] for r in runs))
    music = [sum(sample.durations[a.album_id].values()) / 60 for a in ok]
    assert s["music_minutes_per_album"] == pytest.approx(sum(music) / len(music))
    assert s["top_genres"][0] == ("ambient", 2)  # the only genre on two albums
    assert sorted(g for g, _ in s["top_genres"]) == sorted({g.lower() for a in ok for g in a.genres})
    assert s["top_errors"] == [(a.error, 1) for a in sample.failed]


def test_stats_after_a_resumed_run(sample):
    resumed = resume(sample)
    s = compute_stats(resumed.out)
    assert (s["albums_ok"], s["albums_failed"], s["runs"]) == (len(resumed.albums), 0, 2)
    assert s["tracks_failed"] == 0 and s["top_errors"] == []


def test_stats_command_prints_a_summary(sample, capsys):
    assert stats_main([str(sample.out)]) == 0
    out = capsys.readouterr().out
    assert f"{len(sample.ok)} ok, {len(sample.failed)} failed" in out
    assert "ambient" in out and "minutes per album" in out and "tracks per album" in out
    assert stats_main([str(sample.out / "missing")]) == 1


def test_stats_of_an_empty_folder(tmp_path, capsys):
    (tmp_path / "manifests").mkdir()
    s = compute_stats(tmp_path)
    assert (s["albums_ok"], s["albums_failed"], s["wall_minutes_per_album"], s["top_genres"]) == (0, 0, None, [])
    assert "0 ok, 0 failed" in format_stats(s)


def test_model_text_cannot_drive_the_terminal(tmp_path):
    evil = "\x1b[2J\x1b]0;owned\x07line1\nline2\u202eevil"
    sample = make_out(tmp_path / "out", (replace(ALBUMS[3], error=evil),))
    text = format_stats(compute_stats(sample.out))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "line1 line2" in text
    assert len(printable("x" * 500)) == 120


def test_stats_show_gpu_busy_share_and_gpu_minutes_per_album(sample):
    from albumforge import manifest as mf
    from albumforge.parts import write_row

    s = compute_stats(sample.out)  # runs from before GPU figures were recorded: none shown
    assert s["gpu_busy_share"] is None and "– busy" in format_stats(s)
    write_row(sample.out, "runs", {**mf.null_row("runs"), "run_id": "gpu-run", "n_ok": 2,
                                   "wall_s": 50.0, "gpu_busy_s": 90.0, "gpu_held_s": 120.0})
    s = compute_stats(sample.out)
    assert s["gpu_busy_share"] == pytest.approx(0.75)
    assert s["gpu_minutes_per_album"] == pytest.approx(120 / 60 / 2)
    assert s["gpu_busy_minutes_per_album"] == pytest.approx(90 / 60 / 2)
    assert "75% busy, 1.00 GPU-minutes per album (0.75 in model calls)" in format_stats(s)
