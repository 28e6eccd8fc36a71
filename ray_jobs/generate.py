"""The generate job: concepts -> plans -> warm GPU actors in Ray Data -> media + manifests.

Run it locally (``python -m ray_jobs.generate CONCEPTS --out OUT``: starts a local Ray
when none is running) or on a cluster (``ray job submit --working-dir . -- python -m
ray_jobs.generate ...``). The recipe, in ``run``:

  read concepts -> skip finished albums -> plan (Planner) -> explode into job rows
  -> map_batches(MusicActor) -> map_batches(ImageActor) -> write manifests per album
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from actors.tags import tag_album
from albumforge import manifest as mf
from albumforge.parts import CatalogWriter
from albumforge.busy import BusyLog, totals
from albumforge.rows import KIND_ART, KIND_FAILED, from_batch, reroll_key
from albumforge.storage import Store
from director.plan import (
    check_templates,
    director_columns,
    load_failed_plan,
    load_saved_plan,
    resolve_director,
)
from ray_jobs import assemble, console
from ray_jobs.concepts import Concept, read_concepts
from albumforge.config import RunConfig
from albumforge.outlock import OutLock
from ray_jobs.placement import (
    Placements,
    describe_pools,
    observe,
    strategy,
)
from ray_jobs.pipeline import FATAL_WRITE, check_out, init_ray, shutdown_ray, sweep_temp_files
from ray_jobs.resume import Finished, scan_finished
from ray_jobs.watch import Interrupts, PlacementWatch, StageAsk, StageLoad, StartupWatch, drain

log = logging.getLogger("albumforge")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunSummary:
    run_id: str
    out: Path | str  # as given: a local path or an object storage URL
    n_concepts: int = 0
    n_skipped: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_tracks: int = 0
    wall_s: float = 0.0
    stage_s: dict = field(default_factory=lambda: defaultdict(float))
    status: str | None = None  # the run row's: ok | failed | interrupted (None until it ends)
    error: str | None = None  # why the run stopped early
    fatal: str | None = None  # set by a write error every later write would hit too: stops the run
    exit_code: int | None = None  # set when a signal stopped the run (130 SIGINT, 143 SIGTERM)
    resources: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    placement: Placements = field(default_factory=Placements)  # where each actor ran
    busy: BusyLog = field(default_factory=BusyLog)  # each GPU actor's model calls (albumforge.busy)
    failed: list = field(default_factory=list)  # (source, error) of each album this run failed
    own_ray: bool = False  # this run started (or connected to) Ray, and so shuts it down
    verbosity: int = console.NORMAL

    @property
    def minutes_per_album(self) -> float | None:
        made = self.n_ok
        return self.wall_s / 60.0 / made if made else None


def pool_sizes(resources: dict, cfg: RunConfig, nodes: list[dict] | None = None, limits=None) -> dict:
    """Pool bounds and per-actor GPU shares (``ray_jobs.placement.plan_pools``).

    ``nodes``: each live node's resources (None: ``resources`` as one node); ``limits``: what
    the autoscaler may add (``placement.find_limits``; None: ``cluster.grow_factor``).
    """
    from ray_jobs.placement import plan_pools

    return plan_pools(cfg, nodes if nodes is not None else [resources], limits)


def _versions() -> dict:
    out = {}
    for pkg in ("albumforge", "ray", "torch", "diffusers", "transformers", "pyarrow", "openai"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ---------------------------------------------------------------- manifest rows
def write_failed_album(catalog: CatalogWriter, run_id: str, cfg: RunConfig, album_id: str, source: str,
                       concept: str, error: str, inputs: dict | None = None, director: dict | None = None) -> None:
    """A failed album: its album row naming the error, with no tracks."""
    row = assemble.failed_album_row(album_id=album_id, run_id=run_id, source=source, concept=concept,
                                    inputs=inputs, error=error, cfg=cfg, director=director_columns(director),
                                    now=_now())
    catalog.album(row, [])


class AlbumWriter:
    """Collects an album's job rows as they stream in; writes its manifests when complete."""

    def __init__(self, out: Store, run_id: str, cfg: RunConfig, finished: Finished, concepts: list[Concept],
                 catalog: CatalogWriter):
        self.out, self.run_id, self.cfg, self.finished = out, run_id, cfg, finished
        self.catalog = catalog  # buffers the rows; parts are written every few albums (albumforge.parts)
        self.rows: dict[str, list[dict]] = defaultdict(list)
        self.concepts: dict[str, Concept] = {c.album_id: c for c in concepts}
        self.pending: set[str] = set(self.concepts)  # albums not yet written
        self.errors: dict[str, str] = {}  # album -> the error of its failed album row

    def add(self, row: dict) -> str | None:
        """Add one job row; returns the album_id when that album is now complete."""
        aid = row["album_id"]
        self.rows[aid].append(row)
        return aid if len(self.rows[aid]) >= int(row["n_items"]) else None

    def ready(self, aid: str) -> bool:
        """True when every item of a planned album is already finished on disk (an interrupted
        run's item records, an earlier run's manifests): it can be written with no actor."""
        record = load_saved_plan(self.out, aid)
        if record is None:
            return False
        n = len(record["plan"]["tracks"])
        items, art = self.finished.done(aid)
        want_art = set(range(1, n + 1)) if self.cfg.image.track_art else set()
        return set(items) >= set(range(n + 1)) and set(art) >= want_art

    def write(self, aid: str, summary: RunSummary, lost: str | None = None) -> str:
        """Write the album's tracks manifest, then its album row (the completion marker).

        Items an earlier run finished (``self.finished``) are kept as they were; items an
        interrupted run recorded (``albumforge.records``) count as this run's rows; an item
        whose row never came back is failed with ``lost`` as its reason.
        """
        c = self.concepts[aid]
        self.pending.discard(aid)
        rows = assemble.merge_items(self.rows.pop(aid, []), self.finished.records.get(aid, []))
        failed = [r for r in rows if r["kind"] == KIND_FAILED]
        record = load_saved_plan(self.out, aid)
        if failed or record is None:  # no plan: the album fails whole, naming why
            error = failed[0]["error"] if failed else (lost or "plan missing after planning")
            failed_record = load_failed_plan(self.out, aid)
            write_failed_album(self.catalog, self.run_id, self.cfg, aid, c.source, c.concept, error, c.inputs,
                               failed_record["director"] if failed_record else None)
            self.errors[aid] = error
            summary.n_failed += 1
            return mf.STATUS_FAILED
        tracks, cover, new_cover = self._items(aid, record["plan"], rows, lost)
        cover_error = None if cover["cover_path"] else ((new_cover or {}).get("error") or lost or "cover row lost")
        status, error = assemble.album_status(tracks, cover_error, len(record["plan"]["tracks"]),
                                              self.cfg.image.track_art)
        seconds = assemble.stage_seconds(rows)
        album = assemble.album_row(album_id=aid, run_id=self.run_id, source=c.source, concept=c.concept,
                                   inputs=c.inputs, seed=self.cfg.seed, record=record, tracks=tracks, cover=cover,
                                   status=status, error=error, seconds=seconds, cfg=self.cfg,
                                   director=director_columns(record["director"]), now=_now())
        # tags (title, artist, album, track number, year) and the embedded cover: the
        # cover exists only now, after the image stage, so tagging happens per album here
        # (files an earlier run finished and tagged are left alone unless the cover is new)
        to_tag = tracks if new_cover is not None else [t for t in tracks if t["run_id"] == self.run_id]
        for problem in tag_album(self.out, album, to_tag):
            log.warning("album %s: %s", aid, problem)
        self.catalog.album(album, tracks)  # tracks, then the album row (its completion marker), in one flush
        if error:
            self.errors[aid] = error
        for stage, sec in (("plan", album["plan_s"]), *seconds.items()):
            summary.stage_s[stage] += sec
        summary.n_tracks += album["n_tracks_ok"]
        if status == mf.STATUS_OK:
            summary.n_ok += 1
        else:
            summary.n_failed += 1
        return status

    def _items(self, aid: str, plan: dict, rows: list[dict], lost: str | None) -> tuple[list[dict], dict, dict | None]:
        """The album's tracks rows, its cover fields, and its cover job row when this run made it."""
        by_no = {int(r["item_no"]): r for r in rows if r["kind"] != KIND_ART}
        arts = {int(r["item_no"]): r for r in rows if r["kind"] == KIND_ART}
        prev = self.finished.items.get(aid, {})
        prev_art = self.finished.art.get(aid, {})
        rerolls = self.finished.rerolls.get(aid, {})
        now = _now()
        tracks = []
        for no, t in enumerate(plan["tracks"], 1):
            art = (assemble.art_columns(arts[no]) if no in arts
                   else prev_art[no] if no in prev_art
                   else assemble.art_columns(None, lost or "art row lost", rerolls.get(reroll_key(KIND_ART, no), 0))
                   if self.cfg.image.track_art else assemble.ART_NONE)
            if no not in by_no and no in prev:  # finished by an earlier run: keep its row
                tracks.append({**prev[no], **art})
            else:
                tracks.append(assemble.track_row(aid, self.run_id, no, t, by_no.get(no), art, self.cfg.music, now, lost))
        new_cover = by_no.get(0)
        cover = assemble.cover_columns(new_cover or prev.get(0), rerolls.get("cover", 0))
        return tracks, cover, new_cover


# ---------------------------------------------------------------- the job
def build_dataset(cfg: RunConfig, concepts: list[Concept], finished: Finished, sizes: dict, run_id: str):
    """The streaming recipe: plan -> explode -> music -> image (lazy until consumed)."""
    import ray
    from ray.data import ActorPoolStrategy

    from actors.image import ImageActor
    from actors.music import MusicActor
    from ray_jobs.planner import Planner, explode

    store = cfg.store
    out = store.url  # actors get OUT's URL (or absolute path) and build their own client: no secret travels
    plan_env = {k: os.environ[k] for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL") if os.environ.get(k)}
    done_pairs = {c.album_id: finished.done(c.album_id) for c in concepts}
    done = {aid: items for aid, (items, _) in done_pairs.items() if items}
    done_art = {aid: art for aid, (_, art) in done_pairs.items() if art}
    track_art, rerolls = cfg.image.track_art, finished.rerolls
    images_per_album = 1 + (cfg.plan.tracks_per_album if track_art else 0)
    rows_per_album = 1 + cfg.plan.tracks_per_album + (cfg.plan.tracks_per_album if track_art else 0)
    items = [
        {"album_id": c.album_id, "concept": c.concept, "source": c.source,
         "inputs_json": json.dumps(c.inputs, ensure_ascii=False, default=str)}
        for c in concepts
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # One album per call, `plan.concurrency` calls at once on one threaded actor (planning
    # waits on the network). One album per block also lets the GPU stages spread the
    # albums over all their actors instead of receiving a single large block.
    conc = cfg.plan.concurrency
    ds = ds.map_batches(
        Planner,
        fn_constructor_kwargs={"out": out, "plan": cfg.plan, "cache_dir": store.uri("cache/director"),
                               "env": plan_env, "time_scale": cfg.sim.time_scale, "run_id": run_id},
        batch_size=1,
        compute=ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=conc,
                                  max_concurrent_calls_per_actor=conc, enable_true_multi_threading=True),
        num_cpus=0.25,
        batch_format="numpy",
    )
    seed = cfg.seed
    ds = ds.flat_map(lambda row: explode(row, seed, done, track_art, done_art, rerolls), num_cpus=0.25)
    m, i = cfg.music, cfg.image
    # Ray restarts a dead actor and retries its batch; each death is counted against what
    # was in flight (actors.faults), so retries end: an item fails after max_deaths deaths
    faults = dict(run_id=run_id, max_deaths=cfg.faults.max_deaths, time_scale=cfg.sim.time_scale)
    ds = ds.map_batches(
        MusicActor,
        fn_constructor_kwargs=dict(out=out, music=m, tiny_cache=str(cfg.tiny_cache), **faults),
        # rows arrive mixed (an album's cover and art among its tracks): size batches so that
        # each call still holds music.batch_size tracks; an album's block (one album) then
        # fills a batch instead of leaving a one-track remainder that costs a whole window
        batch_size=-(-m.batch_size * rows_per_album // cfg.plan.tracks_per_album),
        compute=strategy(sizes, "music"),  # grows and shrinks with the cluster
        num_gpus=sizes["music_gpus"],
        num_cpus=m.num_cpus,
        batch_format="numpy",  # Ray Data's actors restart and retry without limit: bounded by the death count
    )
    ds = ds.map_batches(
        ImageActor,
        fn_constructor_kwargs=dict(out=out, image=i, tiny_cache=str(cfg.tiny_cache), **faults),
        # rows arrive mixed (an album's images among its tracks): size batches so that
        # each call still renders about image.batch_size images
        batch_size=max(1, i.batch_size * rows_per_album // images_per_album),
        compute=strategy(sizes, "image"),
        num_gpus=sizes["image_gpus"],
        num_cpus=i.num_cpus,
        batch_format="numpy",
    )
    return ds


def run(concepts_path: Path, cfg: RunConfig, run_id: str | None = None, verbosity: int = console.NORMAL) -> RunSummary:
    started = _now()
    t0 = time.perf_counter()
    out = cfg.store
    check_out(out)
    director = resolve_director(cfg.plan.director)
    if cfg.plan.director == "auto":
        log.info("director: %s (%s)", director,
                 "OPENAI_API_KEY or OPENAI_BASE_URL is set" if director == "openai"
                 else "no OPENAI_API_KEY or OPENAI_BASE_URL: planning offline")
    # 1. read concepts (bad rows are failed albums; a bad file stops here, before Ray)
    settings = cfg.plan_settings(director)
    concepts, rejected = read_concepts(concepts_path, settings, cfg.seed)
    check_templates(cfg.plan, concepts)  # a template variable a row lacks: named error, no call made
    run_id = run_id or console.new_run_id(started)
    summary = RunSummary(run_id=run_id, out=cfg.out, n_concepts=len(concepts) + len(rejected), verbosity=verbosity)
    with OutLock(out, run_id, cfg.faults.hold_stale_s):  # one run per OUT: a second is refused, named
        catalog = CatalogWriter(out)
        try:
            with Interrupts() as interrupts:
                _run_held(concepts_path, cfg, director, concepts, rejected, summary, interrupts, catalog)
        finally:
            summary.wall_s = time.perf_counter() - t0
            _write_run_row(cfg, concepts_path, director, started, summary, catalog)
            stopped = shutdown_ray(wait_s=5.0 if summary.exit_code is not None else None) if summary.own_ray else True
            if stopped:  # no writer of this run is left: what a killed one left half-written goes now
                sweep_temp_files(out)
    return summary


def _run_held(concepts_path: Path, cfg: RunConfig, director: str, concepts: list[Concept], rejected: list,
              summary: RunSummary, interrupts: Interrupts, catalog: CatalogWriter) -> None:
    out, run_id = cfg.store, summary.run_id
    swept = sweep_temp_files(out)  # left by writers a killed run never let finish (we hold OUT now)
    if swept:
        log.info("removed %d temp files left by an interrupted run", swept)
    for r in rejected:
        log.error("skipping %s", r.error)
        write_failed_album(catalog, run_id, cfg, r.album_id, r.source, r.raw, r.error)
        summary.n_failed += 1
        summary.failed.append((r.source, r.error))
    # 2. skip albums an earlier run finished; note the items of unfinished ones that are done
    finished = scan_finished(out, [c.album_id for c in concepts])
    todo = [c for c in concepts if c.album_id not in finished.albums]
    summary.n_skipped = len(concepts) - len(todo)
    if summary.n_skipped:
        log.info("%d of %d albums already finished: skipped", summary.n_skipped, len(concepts))
    writer = AlbumWriter(out, run_id, cfg, finished, todo, catalog)
    # albums whose every item an interrupted run finished need no actor: written now
    for aid in [c.album_id for c in todo if writer.ready(c.album_id)]:
        _write_album(writer, aid, summary)
    todo = [c for c in todo if c.album_id in writer.pending]
    if not todo:
        return
    # 3. plan -> explode -> music -> image, streamed; manifests written per album
    summary.own_ray = init_ray(cfg, summary.verbosity)
    interrupts.install()  # again: ray.init sets its own SIGTERM handler
    import ray
    from tqdm import tqdm

    summary.resources = ray.cluster_resources()
    summary.sizes = sizes = pool_sizes(summary.resources, cfg, *observe(cfg))
    log.info("%s", describe_pools(sizes))
    ds = build_dataset(cfg, todo, finished, sizes, run_id)
    placement = PlacementWatch([StageAsk("MusicActor", sizes["music_gpus"], cfg.music.num_cpus),
                                StageAsk("ImageActor", sizes["image_gpus"], cfg.image.num_cpus)],
                               cfg.faults.placement_timeout_s)
    startup = StartupWatch([StageLoad("Planner", f"the {director} director"),
                            StageLoad("MusicActor", assemble.model_name(cfg.music)),
                            StageLoad("ImageActor", assemble.model_name(cfg.image))],
                           cfg.faults.max_load_deaths, out, run_id)
    bar = tqdm(total=len(todo), desc="albums", unit="album", disable=summary.verbosity == console.QUIET,
               dynamic_ncols=True)
    with bar:
        def on_row(row: dict) -> None:
            summary.placement.add(row)
            summary.busy.add(str(row.get("busy") or ""), ok=str(row["status"]) == mf.STATUS_OK)
            aid = writer.add(from_batch(row))
            if aid is not None:
                _write_album(writer, aid, summary)
                bar.set_postfix(ok=summary.n_ok, failed=summary.n_failed, tracks=summary.n_tracks)
                bar.update(1)

        stopped = drain(ds.iter_batches(batch_size=None, batch_format="numpy"), on_row,
                        lambda: interrupts.reason or summary.fatal or placement() or startup())
        if interrupts.signum is not None:
            # what is finished is written or recorded (albumforge.records): a re-run resumes
            summary.status, summary.error = mf.STATUS_INTERRUPTED, stopped
            summary.exit_code = interrupts.exit_code
            return
        # albums the stream never completed: rows lost with a crashed block, or the run
        # was stopped (a stage nothing can hold, a full disk): each a failed row, named
        lost = (f"not finished: {stopped}" if stopped
                else "rows lost: an actor or block failed; re-run to retry")
        if stopped:
            summary.status, summary.error = mf.STATUS_FAILED, stopped
            log.error("stopping the run: %s", stopped)
        elif startup.broken:  # the stream ended with a stage that could not load: its items failed, named
            summary.status, summary.error = mf.STATUS_FAILED, "; ".join(startup.broken.values())
        for aid in sorted(writer.pending):
            _write_album(writer, aid, summary, lost=lost)
            bar.update(1)


def _write_album(writer: "AlbumWriter", aid: str, summary: RunSummary, lost: str | None = None) -> None:
    """Write one album's manifests; a write error fails that album (named), a full disk the run."""
    try:
        status = writer.write(aid, summary, lost=lost)
        if status != mf.STATUS_OK:
            summary.failed.append((writer.concepts[aid].source, writer.errors.get(aid) or lost or "failed"))
    except OSError as e:
        summary.n_failed += 1
        where = e.filename or writer.out
        summary.failed.append((writer.concepts[aid].source, f"cannot write its manifests: {where}: {e.strerror or e}"))
        log.error("album %s: cannot write its manifests: %s: %s", aid, where, e.strerror or e)
        if e.errno in FATAL_WRITE and not summary.fatal:
            summary.fatal = (f"cannot write under {writer.out}: {e.strerror} ({where}); free space or fix the "
                             "folder, then re-run: finished items are kept")


def _write_run_row(cfg: RunConfig, concepts_path: Path, director: str, started: datetime,
                   summary: RunSummary, catalog: CatalogWriter) -> None:
    """The run's own row, whatever the run's end, after every album row the run still holds
    (then the run's parts are merged); a failure to write them is said, not raised."""
    if summary.status is None:
        summary.status = mf.STATUS_OK if summary.n_failed == 0 else mf.STATUS_FAILED
    end = time.time()
    actors = summary.busy.summary(end)
    try:
        catalog.row("runs", {
            "run_id": summary.run_id, "started_at": started, "finished_at": _now(), "wall_s": summary.wall_s,
            "concepts_path": str(concepts_path),
            "config_json": cfg.model_dump_json(), "versions_json": json.dumps(_versions()),
            "resources_json": json.dumps({"cluster": summary.resources, "pools": summary.sizes,
                                          "placement": summary.placement.summary()}, default=str),
            "engine": cfg.music.engine, "music_model": assemble.model_name(cfg.music),
            "image_model": assemble.model_name(cfg.image),
            "director": director, "n_concepts": summary.n_concepts, "n_skipped": summary.n_skipped,
            "n_ok": summary.n_ok, "n_failed": summary.n_failed, "n_tracks": summary.n_tracks,
            "minutes_per_album": summary.minutes_per_album, "stage_s_json": json.dumps(summary.stage_s),
            "status": summary.status, "error": summary.error,
            "actors_json": json.dumps(actors), **totals(actors, end),
        })
        catalog.close(compact=summary.exit_code is None)  # a signalled run ends fast: the next one compacts
    except (OSError, mf.ManifestError) as e:
        summary.error = (summary.error + "; " if summary.error else "") + \
            f"run row not written: {e.filename or cfg.out}: {e.strerror or e}"
        log.error("run %s: %s", summary.run_id, summary.error)


if __name__ == "__main__":  # ``python -m ray_jobs.generate ...`` (what ``ray job submit`` runs): the CLI's generate
    import sys

    from ray_jobs.cli import main

    raise SystemExit(main(["generate", *sys.argv[1:]]))
