"""The covers job: existing songs -> lyrics (Whisper) -> cover plan -> cover -> manifests.

``albumforge covers SONGS --out OUT`` (or ``python -m ray_jobs.covers SONGS --out OUT``,
or through ``ray job submit``). The recipe, in ``run``:

  read songs (ray_jobs.songs: ids by content, tags, bad files named) -> skip finished songs
  -> map_batches(LyricsActor) -> map_batches(CoverPlanner) -> cover job rows
  -> map_batches(SongCoverActor: the ImageActor) -> per song: the embedded copy (--embed)
  and its row in manifests/songs/ (parts: albumforge.parts)

The same machinery as ``ray_jobs.generate``: one run per OUT (``OutLock``), signals
(``Interrupts``), the stream drained with a stop check (``drain``), stages nobody can hold
(``PlacementWatch``), bounded actor deaths (``actors.faults``), the console and its log.
A song is finished when its manifest row is ok and its cover (and embedded copy, with
``--embed``) exist; a re-run skips exactly those.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from actors.lyrics import KIND_LYRICS, LYRICS_COLUMNS
from albumforge import manifest as mf
from albumforge.parts import CatalogWriter, read_latest
from albumforge.rows import KIND_COVER, KIND_FAILED, RESULT_DEFAULTS, item_seed
from ray_jobs import assemble, console
from albumforge.covers_config import CoversConfig
from ray_jobs.pipeline import FATAL_WRITE, check_out, init_ray, shutdown_ray, sweep_temp_files
from albumforge.outlock import OutLock
from ray_jobs.songs import Rejected, Song, read_songs
from ray_jobs.watch import Interrupts, PlacementWatch, StageAsk, StageLoad, StartupWatch, drain

log = logging.getLogger("albumforge")

SONG_COLUMNS = ("song_path", "source", "title", "artist", "album", "genre", "year", "inputs_json")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class CoversSummary:
    run_id: str
    out: Path
    n_songs: int = 0
    n_skipped: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_instrumental: int = 0
    wall_s: float = 0.0
    stage_s: dict = field(default_factory=lambda: defaultdict(float))
    status: str | None = None
    error: str | None = None
    fatal: str | None = None
    exit_code: int | None = None
    resources: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)  # (source, error)
    own_ray: bool = False
    verbosity: int = console.NORMAL

    @property
    def songs_per_minute(self) -> float | None:
        return self.n_ok / (self.wall_s / 60.0) if self.n_ok and self.wall_s else None


def pool_sizes(resources: dict, cfg: CoversConfig) -> dict:
    """Actor counts and GPU asks: with GPUs, one lyrics and one image actor per
    ``lyrics.num_gpus + image.num_gpus`` of a card (0.25 + 0.5 by default)."""
    gpus = float(resources.get("GPU", 0)) if cfg.gpus == "auto" else 0.0
    cpus = float(resources.get("CPU", 1))
    ly, im = cfg.lyrics, cfg.image
    if gpus > 0:
        n = max(1, int(gpus // ((ly.num_gpus + im.num_gpus) or 1.0)))
        lyrics_gpu, image_gpu = ly.num_gpus, im.num_gpus
    else:
        n = max(1, int((cpus - 1) // (ly.num_cpus + im.num_cpus)))
        lyrics_gpu = image_gpu = 0.0
    return {"lyrics_actors": min(n, ly.max_actors or n), "image_actors": min(n, im.max_actors or n),
            "lyrics_gpus": lyrics_gpu, "image_gpus": image_gpu, "cluster_gpus": gpus, "cluster_cpus": cpus}


def _image_model(cfg: CoversConfig) -> str:
    return cfg.image.model_id if cfg.image.engine == "real" else f"{cfg.image.engine}:{cfg.image.model_id}"


# ---------------------------------------------------------------- rows
def song_row(song: Song, seed: int) -> dict:
    """The stream row of one song: a job row (album_id = song_id) with the song's columns."""
    row = {"album_id": song.song_id, "kind": KIND_LYRICS, "item_no": 0, "n_items": 1, "prompt": "",
           "duration_s": 0.0, "reroll": 0, "seed": item_seed(song.song_id, KIND_COVER, 0, seed),
           **RESULT_DEFAULTS, **LYRICS_COLUMNS, "plan_json": "", "plan_error": ""}
    row.update(song_path=song.path, source=song.source, inputs_json=json.dumps(song.inputs, default=str),
               **{k: song.meta(k) for k in ("title", "artist", "album", "genre", "year")})
    if song.lyrics:
        row.update(lyrics=song.lyrics, lyrics_source=song.lyrics_source or "tag")
    if song.duration_s is not None:
        row["song_s"] = float(song.duration_s)
    return row


def cover_jobs(batch: dict) -> dict:
    """Planned songs become cover job rows for the ImageActor; the others failed rows."""
    batch = dict(batch)
    kinds, prompts, status, error = (batch[c].astype(object, copy=True) for c in ("kind", "prompt", "status", "error"))
    for i in range(len(kinds)):
        if status[i] == "ok" and batch["plan_json"][i]:
            kinds[i], status[i], error[i] = KIND_COVER, "pending", ""
            prompts[i] = json.loads(str(batch["plan_json"][i]))["plan"]["cover_prompt"]
        else:
            kinds[i], status[i] = KIND_FAILED, "failed"
            error[i] = str(batch["plan_error"][i] or error[i] or "lyrics failed")
    batch.update(kind=kinds, prompt=prompts, status=status, error=error)
    return batch


def _f(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _tags_json(song: Song | None) -> str | None:
    return json.dumps(song.tags, ensure_ascii=False) if song else None


def failed_song_row(run_id: str, cfg: CoversConfig, song_id: str, path: str, source: str, error: str,
                    inputs: dict | None = None, song: Song | None = None) -> dict:
    row = {f.name: None for f in mf.SONGS}
    row.update(song_id=song_id, run_id=run_id, status=mf.STATUS_FAILED, error=error[:4000], source=source, path=path,
               inputs_json=json.dumps(inputs or {}, default=str), engine=cfg.image.engine,
               image_model=_image_model(cfg), finished_at=_now(), duplicate_paths=[])
    if song is not None:
        row.update(size_bytes=song.size, tags_json=_tags_json(song), duplicate_paths=song.duplicates,
                   duration_s=song.duration_s, **{k: song.meta(k) or None for k in ("title", "artist", "album",
                                                                                     "genre", "year")})
    return row


class SongWriter:
    """Turns one finished stream row into the song's manifest (and embedded copy)."""

    def __init__(self, out: Path, run_id: str, cfg: CoversConfig, songs: list[Song], catalog: CatalogWriter):
        self.out, self.run_id, self.cfg, self.catalog = out, run_id, cfg, catalog
        self.songs = {s.song_id: s for s in songs}
        self.pending = set(self.songs)

    def write(self, row: dict, summary: CoversSummary) -> str:
        sid = str(row["album_id"])
        song = self.songs[sid]
        self.pending.discard(sid)
        ok = row["kind"] == KIND_COVER and row["status"] == "ok"
        error = None if ok else str(row.get("error") or "failed")
        record = json.loads(row["plan_json"]) if row.get("plan_json") else None
        plan, meta = (record or {}).get("plan") or {}, (record or {}).get("director") or {}
        embedded = None
        if ok and self.cfg.embed:
            from actors.songcover import embed_copy

            try:
                embedded = embed_copy(self.out, song.path, sid, row["path"])
            except Exception as e:  # the cover is there; the copy failed: named, the song fails
                ok, error = False, f"embedded copy: {type(e).__name__}: {e}"
        lyrics = str(row.get("lyrics") or "") if row.get("lyrics_source") else ""
        out_row = failed_song_row(self.run_id, self.cfg, sid, song.path, song.source, error or "", song.inputs, song)
        out_row.update(
            status=mf.STATUS_OK if ok else mf.STATUS_FAILED, error=error,
            duration_s=_f(row.get("song_s")) or song.duration_s,
            lyrics=lyrics or None, lyrics_source=row.get("lyrics_source") or None,
            language=row.get("language") or None, language_prob=_f(row.get("language_prob")),
            instrumental=bool(row.get("instrumental")) if row.get("lyrics_worker") or lyrics else None,
            speech_s=_f(row.get("speech_s")), transcribe_s=_f(row.get("transcribe_s")),
            lyrics_model=row.get("lyrics_model") or None, segments_json=row.get("segments_json") or None,
            lyrics_worker=row.get("lyrics_worker") or None,
            summary=plan.get("summary"), motifs=plan.get("motifs"), palette=plan.get("palette"),
            mood=plan.get("mood"), cover_prompt=plan.get("cover_prompt"),
            plan_path=str(Path("plans") / "songs" / f"{sid}.json") if record else None,
            director=meta.get("director"), director_model=meta.get("model"),
            director_attempts=meta.get("attempts"), tokens_in=meta.get("tokens_in"),
            tokens_out=meta.get("tokens_out"), plan_s=_f(meta.get("seconds")),
            cover_path=row["path"] if ok else None,
            cover_seed=int(row["seed"]) if row["kind"] == KIND_COVER else None,
            cover_width=int(row["width"]) if ok else None, cover_height=int(row["height"]) if ok else None,
            cover_score=_f(row.get("score")), cover_prompt_note=row.get("prompt_note") or None,
            cover_worker=(row.get("worker") or None) if row["kind"] == KIND_COVER else None,
            image_s=_f(row.get("gen_s")) if row["kind"] == KIND_COVER else None,
            embedded_path=embedded,
        )
        self.catalog.row("songs", out_row)
        summary.stage_s["lyrics"] += out_row["transcribe_s"] or 0.0
        summary.stage_s["plan"] += out_row["plan_s"] or 0.0
        summary.stage_s["image"] += out_row["image_s"] or 0.0
        if ok:
            summary.n_ok += 1
            summary.n_instrumental += bool(out_row["instrumental"])
        else:
            summary.n_failed += 1
            summary.failed.append((song.source, error))
        return out_row["status"]

    def lost(self, sid: str, reason: str, summary: CoversSummary) -> None:
        song = self.songs[sid]
        self.pending.discard(sid)
        self.catalog.row("songs", failed_song_row(self.run_id, self.cfg, sid, song.path, song.source,
                                                  reason, song.inputs, song))
        summary.n_failed += 1
        summary.failed.append((song.source, reason))


def finished_songs(out: Path, song_ids: list[str], embed: bool) -> set[str]:
    """Songs whose manifest row is ok and whose cover (and copy, with ``embed``) exist."""
    import pyarrow.compute as pc

    from albumforge.present import MediaCheck

    table = read_latest(out, "songs", ["song_id", "status", "cover_path", "embedded_path"])
    table = table.filter(pc.is_in(table["song_id"], _strings(song_ids)))
    exists, done = MediaCheck(out), set()
    for row in table.to_pylist():
        if row["status"] != mf.STATUS_OK or not exists(row["cover_path"]):
            continue
        if embed and not exists(row["embedded_path"]):
            continue
        done.add(row["song_id"])
    return done


def _strings(values: list[str]):
    import pyarrow as pa

    return pa.array(sorted(set(values)), pa.string())


# ---------------------------------------------------------------- the stream
def build_dataset(cfg: CoversConfig, rows: list[dict], sizes: dict, run_id: str):
    """lyrics -> cover plan -> cover job rows -> cover (lazy until consumed)."""
    import ray
    from ray.data import ActorPoolStrategy

    from actors.lyrics import LyricsActor
    from actors.songcover import SongCoverActor
    from ray_jobs.planner import CoverPlanner

    out = cfg.store.url  # actors build their own filesystem client from the URL
    faults = dict(run_id=run_id, max_deaths=cfg.faults.max_deaths)
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one song a block: spread over the actors
    ly, im = cfg.lyrics, cfg.image
    ds = ds.map_batches(
        LyricsActor,
        fn_constructor_kwargs=dict(out=out, lyrics=cfg.lyrics, tiny_cache=str(cfg.tiny_cache), **faults),
        batch_size=ly.batch_size,
        compute=ActorPoolStrategy(size=sizes["lyrics_actors"]),
        num_gpus=sizes["lyrics_gpus"],
        num_cpus=ly.num_cpus,
        batch_format="numpy",
    )
    env = {k: os.environ[k] for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if os.environ.get(k)}
    conc = cfg.plan.concurrency
    ds = ds.map_batches(
        CoverPlanner,
        fn_constructor_kwargs=dict(out=out, plan=cfg.plan, cache_dir=cfg.store.uri("cache/director"),
                                   lyrics_chars=ly.lyrics_chars, env=env, run_id=run_id),
        batch_size=1,
        compute=ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=conc, max_concurrent_calls_per_actor=conc,
                                  enable_true_multi_threading=True),
        num_cpus=0.25,
        batch_format="numpy",
    )
    ds = ds.map_batches(cover_jobs, batch_format="numpy", num_cpus=0.25)
    ds = ds.map_batches(
        SongCoverActor,
        fn_constructor_kwargs=dict(out=out, image=im, tiny_cache=str(cfg.tiny_cache), **faults),
        batch_size=im.batch_size,
        compute=ActorPoolStrategy(size=sizes["image_actors"]),
        num_gpus=sizes["image_gpus"],
        num_cpus=im.num_cpus,
        batch_format="numpy",
    )
    return ds


def run(songs_path: Path, cfg: CoversConfig, run_id: str | None = None,
        verbosity: int = console.NORMAL) -> CoversSummary:
    t0 = time.perf_counter()
    out = cfg.store
    check_out(out)
    from director.covers import check_cover_templates

    check_cover_templates(cfg.plan)  # a broken --prompts override: named, nothing run
    songs, rejected = read_songs(songs_path, cfg.lyrics.max_minutes)  # a bad source stops here, before Ray
    run_id = run_id or console.new_run_id()
    summary = CoversSummary(run_id=run_id, out=cfg.out, n_songs=len(songs) + len(rejected), verbosity=verbosity)
    with OutLock(out, run_id, cfg.faults.hold_stale_s):
        catalog = CatalogWriter(out)  # song rows, written as parts every few songs (albumforge.parts)
        try:
            with Interrupts() as interrupts:
                _run_held(cfg, songs, rejected, summary, interrupts, catalog)
        finally:
            try:
                catalog.close(compact=summary.exit_code is None)
            except (OSError, mf.ManifestError) as e:
                summary.status = summary.status or mf.STATUS_FAILED
                summary.error = (summary.error + "; " if summary.error else "") + f"song rows not written: {e}"
                log.error("covers run %s: %s", run_id, summary.error)
            summary.wall_s = time.perf_counter() - t0
            if summary.status is None:
                summary.status = mf.STATUS_OK if summary.n_failed == 0 else mf.STATUS_FAILED
            if summary.own_ray:
                shutdown_ray(wait_s=5.0 if summary.exit_code is not None else None)
    return summary


def _run_held(cfg: CoversConfig, songs: list[Song], rejected: list[Rejected], summary: CoversSummary,
              interrupts: Interrupts, catalog: CatalogWriter) -> None:
    out, run_id = cfg.store, summary.run_id
    sweep_temp_files(out)
    for r in rejected:  # unreadable, empty, not audio, too long: a named failed row each
        log.error("skipping %s", r.error)
        catalog.row("songs", failed_song_row(run_id, cfg, r.song_id, r.path, r.source, r.error, r.inputs))
        summary.n_failed += 1
        summary.failed.append((r.source, r.error))
    done = finished_songs(out, [s.song_id for s in songs], cfg.embed)
    todo = [s for s in songs if s.song_id not in done]
    summary.n_skipped = len(songs) - len(todo)
    if summary.n_skipped:
        log.info("%d of %d songs already have their cover: skipped", summary.n_skipped, len(songs))
    if not todo:
        return
    summary.own_ray = init_ray(cfg, summary.verbosity)
    interrupts.install()
    import ray
    from tqdm import tqdm

    summary.resources = ray.cluster_resources()
    summary.sizes = sizes = pool_sizes(summary.resources, cfg)
    log.info("actor pools: %s", sizes)
    writer = SongWriter(out, run_id, cfg, todo, catalog)
    ds = build_dataset(cfg, [song_row(s, cfg.seed) for s in todo], sizes, run_id)
    placement = PlacementWatch([StageAsk("LyricsActor", sizes["lyrics_gpus"], cfg.lyrics.num_cpus),
                                StageAsk("SongCoverActor", sizes["image_gpus"], cfg.image.num_cpus)],
                               cfg.faults.placement_timeout_s)
    startup = StartupWatch([StageLoad("LyricsActor", cfg.lyrics.model),
                            StageLoad("CoverPlanner", f"the {cfg.plan.director} director"),
                            StageLoad("SongCoverActor", assemble.model_name(cfg.image))],
                           cfg.faults.max_load_deaths, out, run_id)
    bar = tqdm(total=len(todo), desc="songs", unit="song", disable=summary.verbosity == console.QUIET,
               dynamic_ncols=True)
    with bar:
        def on_row(row: dict) -> None:
            try:
                writer.write(row, summary)
            except OSError as e:
                summary.n_failed += 1
                summary.failed.append((str(row.get("source")), f"cannot write its manifest: {e}"))
                if e.errno in FATAL_WRITE and not summary.fatal:
                    summary.fatal = f"cannot write under {out}: {e.strerror}; free space, then re-run"
            bar.set_postfix(ok=summary.n_ok, failed=summary.n_failed)
            bar.update(1)

        stopped = drain(ds.iter_batches(batch_size=None, batch_format="numpy"), on_row,
                        lambda: interrupts.reason or summary.fatal or placement() or startup())
        if interrupts.signum is not None:
            summary.status, summary.error = mf.STATUS_INTERRUPTED, stopped
            summary.exit_code = interrupts.exit_code
            return
        if stopped:
            summary.status, summary.error = mf.STATUS_FAILED, stopped
            log.error("stopping the run: %s", stopped)
        elif startup.broken:  # the stream ended with a stage that could not load: its items failed, named
            summary.status, summary.error = mf.STATUS_FAILED, "; ".join(startup.broken.values())
        lost = f"not finished: {stopped}" if stopped else "row lost: an actor or block failed; re-run to retry"
        for sid in sorted(writer.pending):
            writer.lost(sid, lost, summary)
            bar.update(1)


def summary_lines(summary: CoversSummary, log_path: Path | None, limit: int = 10) -> list[str]:
    spm = summary.songs_per_minute
    lines = [f"covers run {summary.run_id} {summary.status}: {summary.n_ok} ok ({summary.n_instrumental} "
             f"instrumental), {summary.n_failed} failed, {summary.n_skipped} skipped (already done) in "
             f"{summary.wall_s:.1f} s" + (f", {spm:.1f} songs/min" if spm else "") + f" -> {summary.out}"]
    if summary.error:
        lines.append(f"stopped: {summary.error}")
    for source, error in summary.failed[:limit]:
        first = (error or "").strip().splitlines()[0] if (error or "").strip() else "failed"
        lines.append(f"  failed {source}: {first[:300]}")
    if len(summary.failed) > limit:
        lines.append(f"  ... and {len(summary.failed) - limit} more failed songs (albumforge stats {summary.out})")
    if log_path is not None:
        lines.append(f"log: {log_path}")
    return lines


if __name__ == "__main__":  # ``python -m ray_jobs.covers ...`` (the ``ray job submit`` entry): the CLI's covers
    import sys

    from ray_jobs.cli import main

    raise SystemExit(main(["covers", *sys.argv[1:]]))
