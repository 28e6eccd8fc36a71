"""The plan stages: concept rows in, plans saved, job rows out (and the covers' song plans).

``Planner`` is the Ray Data callable of the generate job: it plans the albums of a batch
concurrently (threads: planning waits on the network, not the CPU) through the director
(``director.plan.make_director``), saves each plan (reused on a re-run), and ``explode``
turns a plan into one job row per work item (``albumforge.rows.job_row``). ``CoverPlanner``
is the covers job's: a cover plan per song (``director.covers``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from actors.faults import load_guarded
from actors.jobs import rows_of
from albumforge.config import PlanConfig
from albumforge.rows import (
    KIND_ART,
    KIND_COVER,
    KIND_TRACK,
    failed_plan_row,
    job_row,
    reroll_key,
)
from albumforge.storage import as_store
from director.covers import (
    DEFAULT_LYRICS_CHARS,
    load_song_plan,
    make_cover_director,
    song_plan_path,
)
from director.plan import (
    load_saved_plan,
    make_director,
    save_failed_plan,
    save_plan,
    write_json,
)
from director.redact import scrub, scrub_tree

log = logging.getLogger("albumforge.planner")


def _load_scorer():
    """MiniLM for the concept score, loaded once per Planner (None when unavailable)."""
    try:
        from actors.quality import TextScorer

        return TextScorer()
    except Exception as e:  # a missing scorer never fails a plan
        log.warning("concept score unavailable: %s", e)
        return None


class Planner:
    """Ray Data callable: plans every album row of a batch; one plan_json per row.

    Rows of a batch are planned at once on a thread pool of ``plan.concurrency`` threads
    that lives as long as the actor; the LLM director adds its own limit on requests in
    flight, shared by every thread (so concurrent ``__call__``s, e.g. in a threaded actor,
    are safe too). A failed plan is a ``plan_error`` naming the reason, never a failed
    batch; what it cost is kept in ``OUT/plans/<album_id>.failed.json``.
    """

    def __init__(self, out: str, plan: PlanConfig, cache_dir: str | None = None, env: dict | None = None,
                 time_scale: float = 1.0, run_id: str | None = None):
        # OPENAI_* settings travel from the driver as constructor arguments (never in a
        # runtime_env, which Ray shows on its dashboard): a cluster's workers lack them.
        os.environ.update(env or {})
        self.out = as_store(out)  # OUT's URL or path: the actor builds its own filesystem client
        # the director, guarded like the GPU actors' models (actors.faults.load_guarded): a
        # stage the run marked broken, or a director that raises, fails every plan, named
        self.director, self.broken = load_guarded(self.out, run_id, "Planner", f"the {plan.director} director",
                                                  lambda: make_director(plan, cache_dir, time_scale))
        self.concurrency = int(plan.concurrency)
        self.scorer = _load_scorer()
        self.scorer_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="plan")

    def _concept_score(self, concept: str, plan: dict) -> float | None:
        """Does the plan still say what the concept asked? (MiniLM cosine of the two texts)."""
        if self.scorer is None:
            return None
        from actors.quality import plan_text

        with self.scorer_lock:
            return round(self.scorer.similarity(concept, plan_text(plan)), 4)

    def _plan_one(self, row: dict) -> dict:
        album_id = str(row["album_id"])
        saved = load_saved_plan(self.out, album_id)
        if saved is not None:
            return {"plan_json": json.dumps(saved), "plan_error": ""}
        if self.broken:
            return {"plan_json": "", "plan_error": scrub(f"plan failed: {self.broken}")[:2000]}
        inputs = json.loads(str(row["inputs_json"]))
        t0 = time.perf_counter()
        try:
            plan, meta = self.director.plan(album_id, str(row["concept"]), inputs)
        except Exception as e:  # a failed plan is a failed album, never a failed batch
            error = scrub(f"plan failed: {type(e).__name__}: {e}")[:2000]
            meta = dict(getattr(e, "meta", None) or {})
            meta["seconds"] = time.perf_counter() - t0
            log.warning("%s (%s): %s", album_id, row["source"], error)
            try:
                save_failed_plan(self.out, {
                    "album_id": album_id, "concept": str(row["concept"]), "inputs": inputs,
                    "source": str(row["source"]), "error": error, "director": scrub_tree(meta)})
            except OSError as w:
                log.warning("%s: could not keep the failed plan's record (%s)", album_id, w)
            return {"plan_json": "", "plan_error": error}
        meta["seconds"] = time.perf_counter() - t0
        record = {
            "album_id": album_id,
            "concept": str(row["concept"]),
            "inputs": inputs,
            "source": str(row["source"]),
            "plan": plan.model_dump(mode="json"),
            "director": scrub_tree(meta),
            "concept_score": self._concept_score(str(row["concept"]), plan.model_dump(mode="json")),
        }
        save_plan(self.out, record)
        return {"plan_json": json.dumps(record), "plan_error": ""}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        results = list(self.pool.map(self._plan_one, rows))
        batch["plan_json"] = np.array([r["plan_json"] for r in results], dtype=object)
        batch["plan_error"] = np.array([r["plan_error"] for r in results], dtype=object)
        return batch


def explode(
    row: dict,
    seed: int,
    done: dict[str, list[int]] | None = None,
    track_art: bool = False,
    done_art: dict[str, list[int]] | None = None,
    rerolls: dict[str, dict[str, int]] | None = None,
) -> list[dict]:
    """One job row per work item of a planned album: item 0 is the cover, 1..N the tracks,
    and with ``track_art`` one art image per track (kind "art", item_no = track number).

    ``done`` / ``done_art`` map album_id to items an earlier run finished: not redone.
    ``rerolls`` maps album_id to re-roll counts per image ("cover", "art:N"): a re-rolled
    image draws a new seed.
    """
    album_id = str(row["album_id"])
    if row["plan_error"]:
        return [failed_plan_row(album_id, str(row["plan_error"]))]
    plan = json.loads(str(row["plan_json"]))["plan"]
    items = [(0, KIND_COVER, plan["cover_prompt"], 0.0)]
    items += [(k, KIND_TRACK, t["music_prompt"], float(t["duration_s"])) for k, t in enumerate(plan["tracks"], 1)]
    if track_art:
        items += [(k, KIND_ART, t["visual_prompt"], 0.0) for k, t in enumerate(plan["tracks"], 1)]
    skip = set((done or {}).get(album_id, ()))
    skip_art = set((done_art or {}).get(album_id, ()))
    counts = (rerolls or {}).get(album_id, {})
    todo = [it for it in items if it[0] not in (skip_art if it[1] == KIND_ART else skip)]
    return [job_row(album_id, kind, no, len(todo), prompt, dur, seed,
                    int(counts.get(reroll_key(kind, no), 0)) if kind != KIND_TRACK else 0)
            for no, kind, prompt, dur in todo]


class CoverPlanner:
    """Ray Data callable: a CoverPlan per song row whose lyrics are done (status "ok").

    Sets ``plan_json`` (the saved record) or ``plan_error``; a failed plan never fails the
    batch. Rows that failed before (lyrics) pass through.
    """

    def __init__(self, out: str, plan: PlanConfig, cache_dir: str | None = None,
                 lyrics_chars: int = DEFAULT_LYRICS_CHARS, env: dict | None = None, run_id: str | None = None):
        os.environ.update(env or {})
        self.out = as_store(out)
        # guarded like the GPU actors' models: a stage the run marked broken, or a director
        # that raises, fails every cover plan, named
        self.director, self.broken = load_guarded(self.out, run_id, "CoverPlanner", f"the {plan.director} director",
                                                  lambda: make_cover_director(plan, lyrics_chars, cache_dir))
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(plan.concurrency)), thread_name_prefix="cover")

    def plan_one(self, row: dict) -> tuple[str, str]:
        song_id = str(row["album_id"])
        if row["status"] != "ok":
            return "", ""
        if self.broken:
            return "", scrub(f"cover plan failed: {self.broken}")[:2000]
        lyrics = str(row["lyrics"] or "")
        saved = load_song_plan(self.out, song_id, lyrics)
        if saved is not None:
            return json.dumps(saved), ""
        song = {k: row.get(k) for k in ("title", "artist", "album", "genre", "year", "lyrics", "instrumental")}
        song["inputs"] = json.loads(str(row.get("inputs_json") or "{}"))
        t0 = time.perf_counter()
        try:
            plan, meta = self.director.plan_cover(song_id, song)
        except Exception as e:  # a failed plan is a failed song, never a failed batch
            error = scrub(f"cover plan failed: {type(e).__name__}: {e}")[:2000]
            log.warning("song %s: %s", song_id, error)
            return "", error
        meta["seconds"] = time.perf_counter() - t0
        record = {"song_id": song_id, "lyrics": lyrics, "plan": plan.model_dump(mode="json"),
                  "director": scrub_tree(meta)}
        write_json(self.out, song_plan_path(song_id), record)
        return json.dumps(record), ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = list(self.pool.map(self.plan_one, rows_of(batch)))
        batch = dict(batch)
        batch["plan_json"] = np.array([r[0] for r in results], dtype=object)
        batch["plan_error"] = np.array([r[1] for r in results], dtype=object)
        return batch
