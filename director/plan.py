"""The plan stage: concept rows in, plan files out, job rows on to the actors.

``Planner`` is the Ray Data callable: it plans the albums of a batch concurrently
(threads: planning waits on the network, not the CPU), saves each plan to
``OUT/plans/<album_id>.json`` (reused on a re-run, so nothing is planned twice), and
``explode`` turns a plan into one job row per work item.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from actors.jobs import KIND_ART, KIND_COVER, KIND_FAILED, KIND_TRACK, RESULT_DEFAULTS, item_seed, reroll_key, rows_of
from director.redact import scrub, scrub_tree
from director.schema import AlbumPlan

log = logging.getLogger(__name__)


def resolve_director(kind: str) -> str:
    """``auto`` means openai when a key or a base URL is configured, else offline."""
    if kind == "auto":
        return "openai" if (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")) else "offline"
    return kind


def make_director(plan_cfg: dict):
    """The director named by the (resolved) plan config; its ``plan()`` returns (AlbumPlan, meta)."""
    kind = resolve_director(plan_cfg["director"])
    common = dict(
        prompts_dir=plan_cfg.get("prompts_dir"),
        tracks_per_album=plan_cfg["tracks_per_album"],
        track_seconds=plan_cfg["track_seconds"],
        lyrics=plan_cfg["lyrics"],
    )
    if kind == "offline":
        from director.offline import OfflineDirector

        return OfflineDirector(**common)
    elif kind == "openai":
        from director.llm import LLMDirector

        # optional keys: a plan_cfg from an older PlanConfig still works
        optional = ("steps", "response_format", "max_retries", "retry_backoff_s", "retry_backoff_max_s",
                    "concurrency", "requests_per_minute", "temperature", "max_tokens")
        return LLMDirector(
            model=plan_cfg["director_model"], timeout_s=plan_cfg["timeout_s"],
            max_attempts=plan_cfg["max_attempts"], cache_dir=plan_cfg.get("cache_dir"), **common,
            **{k: plan_cfg[k] for k in optional if k in plan_cfg},
        )
    else:
        raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline' or 'openai')")


def _where(source: str) -> str:
    """"concepts.csv:3" -> "concepts.csv line 3" (row for Parquet)."""
    name, _, no = str(source).rpartition(":")
    if not name or not no.isdigit():
        return str(source)
    return f"{name} {'row' if name.lower().endswith('.parquet') else 'line'} {no}"


def check_templates(plan_cfg, concepts) -> None:
    """Render every prompt template for every concept row, before any model is called.

    ``plan_cfg``: a PlanConfig or its ``model_dump()``; ``concepts``: rows with
    ``.concept``, ``.inputs`` and ``.source`` (``ray_jobs.concepts.Concept``). Raises
    ``TemplateVarError`` naming the row ("concepts.csv line 3"), the template and the
    variable; a broken template raises ``jinja2.TemplateSyntaxError`` (file and line).
    A row whose data is bad (e.g. ``track_count="many"``) is not a template error: it is
    left to fail alone at plan time, as a failed album naming the reason.
    """
    from director.templates import TemplateVarError

    cfg = plan_cfg.model_dump(mode="json") if hasattr(plan_cfg, "model_dump") else dict(plan_cfg)
    kind = resolve_director(cfg["director"])
    if kind == "openai":
        from director.steps import PromptBuilder

        builder = PromptBuilder(cfg.get("prompts_dir"), cfg.get("steps", "single"), cfg["tracks_per_album"],
                                cfg["track_seconds"], cfg["lyrics"])
        check = builder.check
    elif kind == "offline":
        if not cfg.get("prompts_dir"):
            return  # the shipped offline templates use only what the offline director passes
        director = make_director({**cfg, "director": "offline"})

        def check(concept, inputs):
            director.plan("check", concept, inputs)
    else:
        raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline' or 'openai')")
    for c in concepts:
        try:
            check(str(c.concept), dict(c.inputs))
        except TemplateVarError as e:
            raise TemplateVarError(f"{_where(c.source)}: {e}") from None
        except ValueError:  # bad row data (TemplateVarError is a KeyError, not this)
            continue


def director_columns(meta: dict | None) -> dict:
    """The albums-manifest columns for a plan's director meta (also a failed plan's)."""
    meta = meta or {}
    return {
        "director": meta.get("director"),
        "director_model": meta.get("model"),
        "director_attempts": meta.get("attempts"),
        "tokens_in": meta.get("tokens_in"),
        "tokens_out": meta.get("tokens_out"),
        "director_json": json.dumps(meta, ensure_ascii=False, default=str) if meta else None,
    }


def plan_path(out: Path, album_id: str) -> Path:
    return Path(out) / "plans" / f"{album_id}.json"


def load_saved_plan(out: Path, album_id: str) -> dict | None:
    """A plan saved by an earlier run, or None when absent or no longer valid."""
    path = plan_path(out, album_id)
    try:
        record = json.loads(path.read_text())
        AlbumPlan.model_validate(record["plan"])
        return record
    except FileNotFoundError:
        return None
    except Exception as e:
        log.warning("%s: saved plan unusable (%s); planning again", path, e)
        return None


def failed_plan_path(out: Path, album_id: str) -> Path:
    return Path(out) / "plans" / f"{album_id}.failed.json"


def load_failed_plan(out: Path, album_id: str) -> dict | None:
    """What the director left of a failed plan: {album_id, concept, error, director: meta}."""
    try:
        return json.loads(failed_plan_path(out, album_id).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)


def save_plan(out: Path, record: dict) -> None:
    _write_json(plan_path(out, record["album_id"]), record)
    failed_plan_path(out, record["album_id"]).unlink(missing_ok=True)


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

    def __init__(self, out: str, plan_cfg: dict, env: dict | None = None):
        # OPENAI_* settings travel from the driver as constructor arguments (never in a
        # runtime_env, which Ray shows on its dashboard): a cluster's workers lack them.
        os.environ.update(env or {})
        self.out = Path(out)
        self.director = make_director(plan_cfg)
        self.concurrency = int(plan_cfg["concurrency"])
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
                _write_json(failed_plan_path(self.out, album_id), {
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
    base = {"album_id": album_id, **RESULT_DEFAULTS, "reroll": 0}
    if row["plan_error"]:
        return [{**base, "kind": KIND_FAILED, "item_no": -1, "n_items": 1, "prompt": "",
                 "duration_s": 0.0, "seed": 0, "status": "failed", "error": str(row["plan_error"])}]
    plan = json.loads(str(row["plan_json"]))["plan"]
    items = [(0, KIND_COVER, plan["cover_prompt"], 0.0)]
    items += [(k, KIND_TRACK, t["music_prompt"], float(t["duration_s"])) for k, t in enumerate(plan["tracks"], 1)]
    if track_art:
        items += [(k, KIND_ART, t["visual_prompt"], 0.0) for k, t in enumerate(plan["tracks"], 1)]
    skip = set((done or {}).get(album_id, ()))
    skip_art = set((done_art or {}).get(album_id, ()))
    counts = (rerolls or {}).get(album_id, {})
    todo = [it for it in items if it[0] not in (skip_art if it[1] == KIND_ART else skip)]
    rows = []
    for no, kind, prompt, dur in todo:
        r = int(counts.get(reroll_key(kind, no), 0)) if kind != KIND_TRACK else 0
        rows.append({**base, "kind": kind, "item_no": no, "n_items": len(todo), "prompt": prompt,
                     "duration_s": dur, "reroll": r, "seed": item_seed(album_id, kind, no, seed, r)})
    return rows
