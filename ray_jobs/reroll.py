"""``albumforge reroll OUT --below X``: re-render the images whose CLIP score is under X.

Two steps, each safe to stop after:

1. **mark**: in the manifests, every cover / track art scored under X becomes missing for
   a re-roll: its path and score are cleared, ``cover_reroll`` / ``art_reroll`` goes up
   by one, ``art_error`` (art) or the album's ``error`` (cover) says why, and the album is
   ``failed`` until the image is back. The files stay where they are until overwritten.
2. **regenerate** (unless ``--mark-only``): the marked images are rendered again in this
   process by an ``ImageActor`` built from the run's own image config, each with a new
   seed (``albumforge.rows.item_seed(..., reroll=n)``), and written back into the manifests.

After ``--mark-only`` (or if step 2 stops half way), the normal resume path of
``albumforge generate`` redoes exactly the marked images with the same new seeds: the
marked items are missing for ``resume.scan_finished``, and ``Finished.rerolls`` carries
their counters to ``explode``. Only images are re-rolled; ``concept_score`` (the plan
against its concept) is for sorting: a new plan is a new album.

Needs no Ray and no catalog. Do not run it while a generate job writes the same OUT. Each
step rewrites the albums it touched as one part per kind (``albumforge.parts``): the
latest rows win.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from actors.jobs import batch_of, rows_of
from albumforge import manifest as mf
from albumforge import parts
from albumforge.config import RunConfig, out_value
from albumforge.parts import read_latest
from albumforge.rows import KIND_ART, KIND_COVER, from_batch, job_row
from albumforge.storage import as_store
from ray_jobs import assemble

log = logging.getLogger("albumforge.reroll")


@dataclass
class Pick:
    album_id: str
    kind: str  # cover | art
    item_no: int  # 0 for the cover, the track number for art
    prompt: str
    score: float  # the old score
    reroll: int = 0  # the new re-roll count (set by mark)
    new_score: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return "cover" if self.kind == KIND_COVER else f"art {self.item_no}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _read_albums(out, ids: set[str] | None = None) -> dict[str, tuple[dict, list[dict]]]:
    """album_id -> (album row, its tracks rows) from the catalogue (one read of its parts)."""
    import pyarrow.compute as pc

    cat = parts.read_catalogue(out)
    albums, tracks = cat.albums.rows(), cat.tracks.rows()
    if ids is not None:
        keep = _strings(sorted(ids))
        albums = albums.filter(pc.is_in(albums["album_id"], keep))
        tracks = tracks.filter(pc.is_in(tracks["album_id"], keep))
    by_album: dict[str, list[dict]] = {}
    for t in tracks.to_pylist():
        by_album.setdefault(t["album_id"], []).append(t)
    return {a["album_id"]: (a, by_album.get(a["album_id"], [])) for a in albums.to_pylist()}


def _strings(values: list[str]):
    import pyarrow as pa

    return pa.array(values, pa.string())


def _write_albums(out, albums: list[tuple[dict, list[dict]]]) -> None:
    """Rewrite albums: one part per kind (tracks, then the album rows: the completion markers)."""
    w = parts.CatalogWriter(out, flush_albums=len(albums) + 1, flush_s=float("inf"))
    for album, tracks in albums:
        w.album(album, tracks)
    w.flush()


def select(out: Path, below: float, what: str = "images") -> list[Pick]:
    """The images scored under ``below``, lowest first (unscored images are never picked)."""
    picks = []
    for aid, (album, tracks) in sorted(_read_albums(out).items()):
        if what in ("images", "covers") and album.get("cover_path") and album.get("cover_score") is not None:
            if album["cover_score"] < below:
                picks.append(Pick(aid, KIND_COVER, 0, album["cover_prompt"], album["cover_score"]))
        if what in ("images", "art"):
            for t in tracks:
                if t.get("art_path") and t.get("art_score") is not None and t["art_score"] < below:
                    picks.append(Pick(aid, KIND_ART, int(t["track_no"]), t["visual_prompt"], t["art_score"]))
    return sorted(picks, key=lambda p: (p.score, p.album_id, p.item_no))


def _status(album: dict, tracks: list[dict], track_art: bool, cover_error: str | None) -> tuple[str, str | None]:
    """An album's status and error from its items (a plan that failed has no cover prompt)."""
    if not album.get("cover_prompt"):
        return album["status"], album.get("error")
    if not album.get("cover_path"):
        cover_error = cover_error or "missing"
    return assemble.album_status(tracks, cover_error, album.get("n_tracks") or 0, track_art)


def mark(out: Path, picks: list[Pick], below: float, run_id: str, track_art: bool) -> None:
    """Step 1: the picked images become missing-for-reroll in the manifests, counters + 1."""
    by_album: dict[str, list[Pick]] = {}
    for p in picks:
        by_album.setdefault(p.album_id, []).append(p)
    found, rewritten = _read_albums(out, set(by_album)), []
    for aid, group in by_album.items():
        album, tracks = found[aid]
        by_no = {int(t["track_no"]): t for t in tracks}
        cover_error = None
        for p in group:
            why = f"re-roll asked: score {p.score:.2f} < {below:g}"
            if p.kind == KIND_COVER:
                p.reroll = int(album.get("cover_reroll") or 0) + 1
                album.update(cover_path=None, cover_score=None, cover_prompt_note=None, cover_reroll=p.reroll)
                cover_error = why
            else:
                t = by_no[p.item_no]
                p.reroll = int(t.get("art_reroll") or 0) + 1
                t.update(art_path=None, art_score=None, art_prompt_note=None, art_reroll=p.reroll, art_error=why,
                         run_id=run_id, finished_at=_now())
        album["status"], album["error"] = _status(album, tracks, track_art, cover_error)
        album.update(run_id=run_id, finished_at=_now())
        rewritten.append((album, tracks))
    _write_albums(out, rewritten)


def regenerate(out: Path, cfg: RunConfig, picks: list[Pick], run_id: str, actor=None) -> None:
    """Step 2: render the marked images again (new seeds) and write them into the manifests."""
    if not picks:
        return
    if actor is None:
        from actors.image import ImageActor

        actor = ImageActor(as_store(out).url, cfg.image, str(cfg.tiny_cache))
    rows = [job_row(p.album_id, p.kind, p.item_no, 1, p.prompt, 0.0, cfg.seed, p.reroll) for p in picks]
    done = rows_of(actor(batch_of(rows)))
    by_album: dict[str, list[tuple[Pick, dict]]] = {}
    for p, r in zip(picks, done):
        r = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        by_album.setdefault(p.album_id, []).append((p, r))
    found, rewritten = _read_albums(out, set(by_album)), []
    for aid, group in by_album.items():
        album, tracks = found[aid]
        by_no = {int(t["track_no"]): t for t in tracks}
        cover_error = None
        for p, r in group:
            ok = r["status"] == mf.STATUS_OK
            p.new_score = from_batch(r)["score"] if ok else None
            p.error = None if ok else str(r["error"])
            if p.kind == KIND_COVER:
                album.update(assemble.cover_columns(r))
                cover_error = None if ok else p.error
            else:
                by_no[p.item_no].update(assemble.art_columns(r), run_id=run_id, finished_at=_now())
        album["status"], album["error"] = _status(album, tracks, cfg.image.track_art, cover_error)
        album.update(run_id=run_id, finished_at=_now())
        rewritten.append((album, tracks))
    _write_albums(out, rewritten)


def run_config(out: Path, config: Path | None = None, engine: str = "tiny") -> RunConfig:
    """The config to re-render with: a given file (over the ``engine`` preset), else the
    latest run's own config (as its run manifest recorded it)."""
    if config is not None:
        return RunConfig.load(config, preset=engine).model_copy(update={"out": out})
    runs = read_latest(out, "runs").to_pylist()
    runs = [r for r in runs if r.get("config_json")]
    if not runs:
        raise SystemExit(f"reroll: {out} has no run manifest with a config: pass --config")
    latest = max(runs, key=lambda r: r["started_at"] or datetime.min.replace(tzinfo=timezone.utc))
    return RunConfig.model_validate(json.loads(latest["config_json"])).model_copy(update={"out": out})


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="albumforge reroll",
                                 description="Re-render the images whose CLIP score is under a threshold, new seeds.")
    ap.add_argument("out", type=out_value, help="the output folder of an earlier generate run (a path or a URL)")
    ap.add_argument("--below", type=float, required=True, help="re-roll images whose score is under this")
    ap.add_argument("--what", choices=("images", "covers", "art"), default="images")
    ap.add_argument("--config", type=Path, default=None,
                    help="config to render with (default: the latest run's config in OUT)")
    ap.add_argument("--engine", choices=("tiny", "real"), default="tiny", help="preset under --config")
    ap.add_argument("--dry-run", action="store_true", help="list what would be re-rolled; change nothing")
    ap.add_argument("--mark-only", action="store_true",
                    help="only mark them in the manifests; a later `albumforge generate` redoes them")
    return ap


def reroll_main(argv: list[str] | None = None, actor=None) -> int:
    """Exit status 0 when every picked image came back (or nothing was under the threshold)."""
    args = parser().parse_args(argv)
    out = args.out
    if not parts.manifest_files(out, "albums"):
        print(f"reroll: {out} has no albums manifest (manifests/albums/)")
        return 2
    picks = select(out, args.below, args.what)
    print(f"{len(picks)} image(s) scored under {args.below:g}")
    for p in picks:
        print(f"  {p.album_id} {p.label:>7}  {p.score:8.2f}")
    if args.dry_run or not picks:
        return 0
    started, t0 = _now(), time.perf_counter()
    run_id = "reroll-" + started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    cfg = run_config(out, args.config, args.engine)
    if actor is None and not args.mark_only:  # the image models, here before anything is marked
        from ray_jobs.preflight import fetch_command, preflight

        source = ["--config", str(args.config), "--engine", args.engine] if args.config else ["--from-run", str(out)]
        if preflight(cfg, fetch_command(source), parts=("image",)):
            return 2
    mark(out, picks, args.below, run_id, cfg.image.track_art)
    if args.mark_only:
        print("marked; `albumforge generate` with the same concepts and config re-renders them with new seeds")
        return 0
    regenerate(out, cfg, picks, run_id, actor=actor)
    failed = [p for p in picks if p.error]
    for p in picks:
        after = f"{p.new_score:8.2f}" if p.new_score is not None else ("  failed" if p.error else "unscored")
        print(f"  {p.album_id} {p.label:>7}  {p.score:8.2f} -> {after}  (re-roll {p.reroll})")
    wall = time.perf_counter() - t0
    parts.write_row(out, "runs", {**mf.null_row("runs"),
        "run_id": run_id, "started_at": started, "finished_at": _now(), "wall_s": wall,
        "concepts_path": f"reroll --below {args.below:g} --what {args.what}",
        "config_json": cfg.model_dump_json(), "versions_json": json.dumps({}),
        "resources_json": json.dumps({}), "engine": cfg.image.engine,
        "image_model": cfg.image.model_id if cfg.image.engine == "real" else f"{cfg.image.engine}:{cfg.image.model_id}",
        "n_concepts": len({p.album_id for p in picks}), "n_skipped": 0,
        "n_ok": len(picks) - len(failed), "n_failed": len(failed), "n_tracks": 0,
        "stage_s_json": json.dumps({"image": wall}),
    })
    return 1 if failed else 0
