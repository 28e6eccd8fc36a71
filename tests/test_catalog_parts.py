"""The catalogue as parts (albumforge.parts): latest rows win, tracks follow their album row,
compaction loses nothing, a catalogue of the release before (one file per album) is read,
resumed and compacted, and reading object storage costs requests per run, not per album."""

from __future__ import annotations

import logging

import pytest
from catalog_fixtures import ALBUMS, make_out, resume

from albumforge import manifest as mf
from albumforge import parts
from albumforge.parts import CatalogWriter, PartId, read_latest
from albumforge.storage import Store
from catalog.db.load import load
from catalog.read import read_catalog
from catalog.site import build_site_report
from catalog.stats import compute_stats
from ray_jobs.resume import scan_finished


def album(aid: str, title: str = "T", n: int = 1, status: str = "ok") -> dict:
    return {**mf.null_row("albums"), "album_id": aid, "run_id": "r", "status": status, "title": title, "n_tracks": n}


def track(aid: str, no: int, title: str = "t") -> dict:
    return {**mf.null_row("tracks"), "album_id": aid, "run_id": "r", "track_no": no, "status": "ok", "title": title}


def tracks_of(out, aid: str) -> list[tuple[int, str]]:
    return [(t["track_no"], t["title"]) for t in read_latest(out, "tracks").to_pylist() if t["album_id"] == aid]


def snapshot(out) -> dict[str, list[dict]]:
    """Every row a reader sees, in a stable order."""
    return {kind: sorted(read_latest(out, kind).to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))
            for kind, key in parts.KEYS.items()}


def test_latest_album_rows_win_and_tracks_follow_their_album_row(tmp_path):
    with CatalogWriter(tmp_path, flush_albums=2) as w:
        for i in range(5):
            w.album(album(f"a{i}", n=2), [track(f"a{i}", 1), track(f"a{i}", 2)])
        w.album(album("a1", "again"), [track("a1", 1, "only one now")])  # rewritten in the same run
    assert len(parts.manifest_files(tmp_path, "albums")) == 1  # close merged the run's parts
    parts.write_album(tmp_path, album("a2", "re-rolled"), [track("a2", 1, "new")])
    titles = {a["album_id"]: a["title"] for a in read_latest(tmp_path, "albums").to_pylist()}
    assert len(titles) == 5 and titles["a1"] == "again" and titles["a2"] == "re-rolled"
    assert tracks_of(tmp_path, "a1") == [(1, "only one now")] and tracks_of(tmp_path, "a2") == [(1, "new")]
    assert tracks_of(tmp_path, "a3") == [(1, "t"), (2, "t")]
    # tracks written with no album row after them (a crash between the two parts): the
    # album keeps the tracks of its row; an album with no row at all shows as an orphan
    w = CatalogWriter(tmp_path)
    w.tracks_only("a3", [track("a3", 1, "half written")])
    w.tracks_only("new", [track("new", 1)])
    w.flush()
    assert tracks_of(tmp_path, "a3") == [(1, "t"), (2, "t")]
    cat = parts.read_catalogue(tmp_path)
    assert cat.orphans.rows()["album_id"].to_pylist() == ["new"]
    before = snapshot(tmp_path)
    assert parts.compact_all(tmp_path)["albums"] == 2
    assert all(len(parts.manifest_files(tmp_path, k)) <= 1 for k in parts.KEYS)
    assert snapshot(tmp_path) == before


def test_a_compaction_stopped_half_way_changes_nothing(tmp_path, monkeypatch):
    for run in range(3):
        with CatalogWriter(tmp_path, flush_albums=1) as w:
            for i in range(4):
                w.album(album(f"a{i}", f"run {run}"), [track(f"a{i}", 1, f"run {run}")])
            w.row("runs", {**mf.null_row("runs"), "run_id": f"r{run}"})
    before = snapshot(tmp_path)
    deleted = []

    def delete_once(self, rel):
        if deleted:
            raise OSError("killed")
        deleted.append(rel)
        (self.root / rel).unlink()

    monkeypatch.setattr(Store, "delete", delete_once)
    with pytest.raises(OSError, match="killed"):
        parts.compact_all(tmp_path)
    monkeypatch.undo()
    assert len(parts.manifest_files(tmp_path, "albums")) > 1  # leftovers, outranked
    assert snapshot(tmp_path) == before
    parts.compact_all(tmp_path)
    assert snapshot(tmp_path) == before and len(parts.manifest_files(tmp_path, "tracks")) == 1


def test_a_writer_merges_its_parts_and_compacts_a_crowded_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "COMPACT_PARTS", 3)
    for run in range(3):  # runs killed before their writer closed: a part each
        parts.write_album(tmp_path, album(f"k{run}"), [track(f"k{run}", 1)])
    assert len(parts.manifest_files(tmp_path, "albums")) == 3
    with CatalogWriter(tmp_path, flush_albums=1) as w:
        for i in range(3):
            w.album(album(f"b{i}"), [track(f"b{i}", 1)])
        assert len(w.mine) == 3
    assert len(parts.manifest_files(tmp_path, "albums")) == 1
    assert read_latest(tmp_path, "albums").num_rows == 6


def test_a_corrupt_part_is_named_by_every_reader(tmp_path):
    sample = make_out(tmp_path / "out")
    bad = mf.manifest_dir(sample.out, "albums") / PartId(999, 1).name
    bad.write_bytes(b"PAR1 not parquet at all")
    for read in (lambda: scan_finished(sample.out, [a.album_id for a in ALBUMS]), lambda: compute_stats(sample.out),
                 lambda: read_catalog(sample.out), lambda: parts.compact_all(sample.out)):
        with pytest.raises(mf.ManifestError, match=str(bad)):
            read()
    assert bad.exists()


def test_a_catalogue_of_the_release_before_is_read_resumed_and_compacted(tmp_path, caplog):
    """Per-album files as the current release writes them: every reader sees the same
    rows as from parts; a resumed run writes parts over them; compaction migrates them."""
    legacy, modern = make_out(tmp_path / "legacy", legacy=True), make_out(tmp_path / "modern")
    assert len(parts.manifest_files(legacy.out, "albums")) == len(ALBUMS)
    assert snapshot(legacy.out) == snapshot(modern.out)
    assert compute_stats(legacy.out) == compute_stats(modern.out)
    ids = [a.album_id for a in ALBUMS]
    done = scan_finished(legacy.out, ids)
    assert done.albums == scan_finished(modern.out, ids).albums and 0 < len(done.albums) < len(ids)
    # the new release resumes it: what failed is redone and written as parts over the old files
    legacy, modern = resume(legacy), resume(modern)
    assert snapshot(legacy.out) == snapshot(modern.out)
    assert scan_finished(legacy.out, ids).albums == set(ids)
    loaded = load(legacy.out)
    before, files = snapshot(legacy.out), parts.manifest_files(legacy.out, "albums")
    assert parts.compact_all(legacy.out)["albums"] == len(files) > len(ALBUMS)
    assert [rel for kind in parts.KEYS for rel, rank in parts.manifest_files(legacy.out, kind) if rank == 0] == []
    assert snapshot(legacy.out) == before  # nothing lost
    with caplog.at_level(logging.INFO, logger="catalog.db.load"):
        assert load(legacy.out) == loaded
    assert f"{len(ALBUMS)} albums and 0 songs unchanged" in caplog.text  # the migration rewrote no album


def test_second_load_and_site_rebuild_skip_unchanged_albums(tmp_path, caplog, monkeypatch):
    sample = make_out(tmp_path / "out")
    load(sample.out)
    first = build_site_report(sample.out)
    assert first.rendered == len(sample.ok)
    upserted = []
    from catalog.db import load as loader

    real = loader._upsert
    monkeypatch.setattr(loader, "_upsert", lambda conn, table, rows, keys: (upserted.append((table.name, len(rows))),
                                                                           real(conn, table, rows, keys)))
    load(sample.out)
    assert ("albums", 0) in upserted and ("tracks", 0) in upserted
    again = build_site_report(sample.out)
    assert again.rendered == 0 and again.written == 0
    row = next(a for a in read_latest(sample.out, "albums").to_pylist() if a["album_id"] == sample.ok[0].album_id)
    parts.write_album(sample.out, {**row, "title": "A New Title"},
                      [t for t in read_latest(sample.out, "tracks").to_pylist() if t["album_id"] == row["album_id"]])
    upserted.clear()
    load(sample.out)
    assert ("albums", 1) in upserted
    assert build_site_report(sample.out).rendered == 1


def test_reading_object_storage_costs_requests_per_run_not_per_album(s3_out):
    """Three runs of 10 albums, and three runs of 60: the same requests to read them all."""
    calls: list[str] = []

    fs = Store(s3_out).fs  # fsspec shares one client between the stores below: one hook counts all
    fs.s3.meta.events.register("before-send", lambda request, **kw: calls.append(request.method))

    def requests(store: Store, n_albums: int) -> dict[str, int]:
        assert store.fs is fs
        for run in range(3):
            with CatalogWriter(store, flush_albums=4) as w:  # several flushes a run, merged at close
                for i in range(n_albums):
                    aid = f"a{run}x{i}"
                    media = {"cover_path": f"media/{aid}/cover.png"} if aid == "a0x0" else {}
                    w.album({**album(aid, n=2), **media},
                            [{**track(aid, no), "path": f"media/{aid}/{no}.ogg" if media else None} for no in (1, 2)])
                w.row("runs", {**mf.null_row("runs"), "run_id": f"r{run}"})
        for rel in ("media/a0x0/cover.png", "media/a0x0/1.ogg", "media/a0x0/2.ogg"):
            store.write_bytes(rel, b"x")
        assert read_latest(store, "tracks").num_rows == 3 * n_albums * 2
        counted = {}
        for name, read in (("read", lambda: read_catalog(store)), ("stats", lambda: compute_stats(store)),
                           ("scan", lambda: scan_finished(store, ["a0x0"]))):
            calls.clear()
            result = read()
            counted[name] = len(calls)
        assert result.albums == {"a0x0"}  # finished: its row is ok and its files are there
        return counted

    small = requests(Store(s3_out + "/small"), 10)
    large = requests(Store(s3_out + "/large"), 60)
    assert large == small, (small, large)
    # of albums and tracks: a listing, and per part (3 runs) a HEAD and a GET (no listings
    # cache: actors on other nodes write here); one listing of media/
    assert small["scan"] <= 2 * (1 + 2 * 3) + 1


def test_the_catalogue_benchmark_runs_small(tmp_path, capsys):
    """bench/bench_catalog.py end to end on a few albums: figures printed, no timing asserted."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_catalog", parts.__file__.replace(
        "albumforge/parts.py", "bench/bench_catalog.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--albums", "12", "--tracks", "2", "--runs", "2", "--new", "3", "--out", str(tmp_path / "o")]) == 0
    fig = json.loads(capsys.readouterr().out)
    assert fig["catalogue_files"]["albums"] == 2 and fig["catalogue_files_compacted"]["albums"] == 1
    assert set(fig["within_target"]) == set(bench.TARGETS)


def test_compact_command_migrates_a_legacy_catalogue(tmp_path, capsys):
    from catalog.commands import compact_main

    sample = make_out(tmp_path / "out", legacy=True)
    before = snapshot(sample.out)
    assert compact_main([str(sample.out)]) == 0
    assert f"albums {len(ALBUMS)} -> 1 files" in capsys.readouterr().out
    assert snapshot(sample.out) == before
    assert compact_main([str(tmp_path / "nothing")]) == 1
