"""Plans on disk and the director's choice: which director, its templates checked before
any request, plans saved to ``OUT/plans/<album_id>.json`` (reused on a re-run, so nothing
is planned twice) and the director's record as manifest columns. The Ray stage that calls
the director lives with the driver (``ray_jobs/planner.py``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from albumforge.storage import as_store
from director.schema import AlbumPlan

if TYPE_CHECKING:  # the section type only: director/ does not import the driver
    from albumforge.config import PlanConfig

log = logging.getLogger(__name__)


def resolve_director(kind: str) -> str:
    """``auto`` means openai when a key or a base URL is configured, else offline."""
    if kind == "auto":
        return "openai" if (os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")) else "offline"
    return kind


def make_director(plan: "PlanConfig", cache_dir: str | Path | None = None, time_scale: float = 1.0):
    """The director ``plan.director`` names (auto: resolved here); ``plan()`` returns (AlbumPlan, meta).
    ``time_scale``: the sim director's (``sim.time_scale``)."""
    kind = resolve_director(plan.director)
    if kind == "sim":
        from director.sim import SimDirector

        return SimDirector(plan, time_scale)
    if kind == "offline":
        from director.offline import OfflineDirector

        return OfflineDirector(plan)
    elif kind == "openai":
        from director.llm import LLMDirector

        return LLMDirector(plan, cache_dir=cache_dir)
    raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline', 'openai' or 'sim')")


def _where(source: str) -> str:
    """"concepts.csv:3" -> "concepts.csv line 3" (row for Parquet)."""
    name, _, no = str(source).rpartition(":")
    if not name or not no.isdigit():
        return str(source)
    return f"{name} {'row' if name.lower().endswith('.parquet') else 'line'} {no}"


def check_templates(plan: "PlanConfig", concepts) -> None:
    """Render every prompt template for every concept row, before any model is called.

    ``plan``: the run's plan section; ``concepts``: rows with ``.concept``, ``.inputs`` and
    ``.source`` (``ray_jobs.concepts.Concept``). Raises ``TemplateVarError`` naming the row
    ("concepts.csv line 3"), the template and the variable; a broken template raises
    ``jinja2.TemplateSyntaxError`` (file and line). A row whose data is bad (e.g.
    ``track_count="many"``) is not a template error: it is left to fail alone at plan
    time, as a failed album naming the reason.
    """
    from director.templates import TemplateVarError

    kind = resolve_director(plan.director)
    if kind == "openai":
        from director.steps import PromptBuilder

        builder = PromptBuilder(plan.prompts_dir, plan.steps, plan.tracks_per_album, plan.track_seconds, plan.lyrics)
        check = builder.check
    elif kind in ("offline", "sim"):  # sim: the offline director's plans, later
        if not plan.prompts_dir:
            return  # the shipped offline templates use only what the offline director passes
        director = make_director(plan.model_copy(update={"director": "offline"}))

        def check(concept, inputs):
            director.plan("check", concept, inputs)
    else:
        raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline', 'openai' or 'sim')")
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


def plan_path(album_id: str) -> str:
    """The album's saved plan, inside OUT."""
    return f"plans/{album_id}.json"


def load_saved_plan(out, album_id: str) -> dict | None:
    """A plan saved by an earlier run, or None when absent or no longer valid. ``out``: a
    Store, a path or a URL (``albumforge.storage``)."""
    store = as_store(out)
    try:
        record = json.loads(store.read_bytes(plan_path(album_id)))
        AlbumPlan.model_validate(record["plan"])
        return record
    except FileNotFoundError:
        return None
    except Exception as e:
        log.warning("%s: saved plan unusable (%s); planning again", store.uri(plan_path(album_id)), e)
        return None


def failed_plan_path(album_id: str) -> str:
    return f"plans/{album_id}.failed.json"


def load_failed_plan(out, album_id: str) -> dict | None:
    """What the director left of a failed plan: {album_id, concept, error, director: meta}."""
    try:
        return json.loads(as_store(out).read_bytes(failed_plan_path(album_id)))
    except (OSError, ValueError):
        return None


def write_json(out, rel: str, record: dict) -> None:
    """``record`` as ``rel`` inside OUT, whole or not at all."""
    as_store(out).write_text(rel, json.dumps(record, indent=2, ensure_ascii=False, default=str))


def save_failed_plan(out, record: dict) -> None:
    """What a failed plan cost (the director's record), kept beside where its plan would be."""
    write_json(out, failed_plan_path(record["album_id"]), record)


def save_plan(out, record: dict) -> None:
    write_json(out, plan_path(record["album_id"]), record)
    as_store(out).delete(failed_plan_path(record["album_id"]))
