"""Catalogue benchmark (issue 12): skip scan, stats, SQL load and site build at scale.

Makes ``--albums`` synthetic finished albums of ``--tracks`` tracks each (rows through the
real ``CatalogWriter``, split over ``--runs`` runs; an empty file for every cover and
track, so the resume scan's file checks are real), then times what a user waits for:

  skip_scan_s        a re-run's ``scan_finished`` over every album (all are skipped)
  stats_s            ``albumforge stats``
  load_s, load_again_s   ``albumforge load`` into a fresh SQLite file, then again (nothing changed)
  site_s, site_incremental_s   ``albumforge site``, then again after ``--new`` albums more
  compact_s          ``albumforge compact`` (every kind into one part)

and how many files a reader opens (``catalogue_files``: per kind; reading the catalogue
is one listing per kind plus one read per file, on object storage too), with the
targets of issue 12 beside each figure. Never run by pytest (tests never time things).

    .venv/bin/python bench/bench_catalog.py --albums 100000
    .venv/bin/python bench/bench_catalog.py --albums 2000 --out /tmp/cat   # keep OUT
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from albumforge import manifest as mf  # noqa: E402
from albumforge import parts  # noqa: E402

TARGETS = {"skip_scan_s": 5, "stats_s": 5, "load_s": 180, "load_again_s": 30, "site_s": 300,
           "site_incremental_s": 15}
GENRES = ["ambient", "synthwave", "folk", "chanson", "jazz", "drone", "techno", "baroque", "dub", "city pop"]


def album_rows(aid: str, run_id: str, i: int, n_tracks: int) -> tuple[dict, list[dict]]:
    now = datetime.now(timezone.utc)
    media = f"media/{aid}"
    tracks = [{**mf.null_row("tracks"), "album_id": aid, "run_id": run_id, "track_no": no, "status": "ok",
               "title": f"Track {no} of album {i}", "music_prompt": f"a calm piece number {no}, warm pads, {i}",
               "visual_prompt": f"a harbour at dusk, variation {no}", "seed": i * 100 + no,
               "path": f"{media}/track-{no:02d}.ogg", "paths": [f"{media}/track-{no:02d}.ogg"],
               "duration_s": 30.0, "planned_s": 30.0, "sample_rate": 32000, "lufs": -14.0, "engine": "tiny",
               "model": "tiny-musicgen", "gen_s": 1.5, "encode_s": 0.1, "finished_at": now}
              for no in range(1, n_tracks + 1)]
    album = {**mf.null_row("albums"), "album_id": aid, "run_id": run_id, "status": "ok",
             "source": f"concepts.txt:{i + 1}", "concept": f"concept number {i}: night ferries and neon",
             "inputs_json": json.dumps({"mood": ["calm", "bright", "dark"][i % 3]}), "seed": i,
             "title": f"Album {i}", "artist": f"Artist {i % 997}", "liner_notes": "Recorded in one night.\n\nMixed at dawn.",
             "genres": [GENRES[i % len(GENRES)], GENRES[(i * 7) % len(GENRES)]],
             "soundscape_json": json.dumps({"genres": ["ambient"], "instruments": ["pads"], "tempo_min_bpm": 70,
                                            "tempo_max_bpm": 90}),
             "cover_prompt": f"album cover {i}", "cover_path": f"{media}/cover.png", "cover_seed": i,
             "cover_width": 64, "cover_height": 64, "n_tracks": n_tracks, "n_tracks_ok": n_tracks,
             "duration_s": 30.0 * n_tracks, "director": "offline", "engine": "tiny", "music_model": "tiny-musicgen",
             "image_model": "tiny-sd", "plan_s": 0.1, "music_s": 12.0, "image_s": 0.5, "encode_s": 0.8,
             "finished_at": now}
    return album, tracks


def make_albums(out: Path, start: int, n: int, n_tracks: int, runs: int) -> list[str]:
    """``n`` finished albums written by ``runs`` runs (a CatalogWriter each), media files too."""
    ids = []
    per_run = -(-n // runs)
    for r in range(runs):
        run_id = f"bench-{start}-{r}"
        with parts.CatalogWriter(out) as w:
            for i in range(start + r * per_run, min(start + n, start + (r + 1) * per_run)):
                aid = f"{i:016x}"
                album, tracks = album_rows(aid, run_id, i, n_tracks)
                folder = out / "media" / aid
                folder.mkdir(parents=True, exist_ok=True)
                for rel in [album["cover_path"], *(t["path"] for t in tracks)]:
                    os.close(os.open(out / rel, os.O_CREAT | os.O_WRONLY, 0o644))
                w.album(album, tracks)
                ids.append(aid)
            w.row("runs", {**mf.null_row("runs"), "run_id": run_id, "wall_s": 60.0, "n_ok": per_run,
                           "started_at": datetime.now(timezone.utc), "status": "ok"})
    return ids


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    print(f"{getattr(fn, '__name__', 'step')}: {seconds:.2f} s", file=sys.stderr, flush=True)  # progress
    return seconds, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--albums", type=int, default=100_000)
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10, help="runs that wrote the albums")
    ap.add_argument("--new", type=int, default=10, help="albums added before the incremental site build")
    ap.add_argument("--out", type=Path, default=None, help="keep OUT here (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from catalog.db.load import load
    from catalog.site import build_site_report
    from catalog.stats import compute_stats
    from ray_jobs.resume import scan_finished

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    out.mkdir(parents=True, exist_ok=True)
    fig: dict = {"albums": args.albums, "tracks_per_album": args.tracks, "runs": args.runs}
    try:
        fig["make_s"], ids = timed(lambda: make_albums(out, 0, args.albums, args.tracks, args.runs))
        fig["catalogue_files"] = {k: len(parts.manifest_files(out, k)) for k in parts.KEYS}
        fig["skip_scan_s"], found = timed(lambda: scan_finished(out, ids))
        assert len(found.albums) == args.albums, "every album should be finished"
        fig["stats_s"], stats = timed(lambda: compute_stats(out))
        assert stats["albums_ok"] == args.albums
        fig["load_s"], counts = timed(lambda: load(out))
        assert counts["albums"] == args.albums and counts["tracks"] == args.albums * args.tracks
        fig["load_again_s"], _ = timed(lambda: load(out))
        site = out.parent / (out.name + "-site")
        fig["site_s"], report = timed(lambda: build_site_report(out, site))
        assert report.rendered == args.albums
        make_albums(out, args.albums, args.new, args.tracks, 1)
        fig["site_incremental_s"], report = timed(lambda: build_site_report(out, site))
        assert report.rendered == args.new, report
        fig["compact_s"], _ = timed(lambda: parts.compact_all(out))
        fig["catalogue_files_compacted"] = {k: len(parts.manifest_files(out, k)) for k in parts.KEYS}
        fig["targets_s"] = TARGETS
        fig["within_target"] = {k: fig[k] <= v for k, v in TARGETS.items()}
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out.parent / (out.name + "-site"), ignore_errors=True)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in fig.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
