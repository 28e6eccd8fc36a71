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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from actors.jobs import KIND_COVER, KIND_FAILED, KIND_TRACK, RESULT_DEFAULTS, derive_seed
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

        return LLMDirector(
            model=plan_cfg["director_model"], timeout_s=plan_cfg["timeout_s"],
            max_attempts=plan_cfg["max_attempts"], cache_dir=plan_cfg.get("cache_dir"), **common,
        )
    else:
        raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline' or 'openai')")


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


def save_plan(out: Path, record: dict) -> None:
    path = plan_path(out, record["album_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False))
    tmp.replace(path)


class Planner:
    """Ray Data callable: plans every album row of a batch; one plan_json per row."""

    def __init__(self, out: str, plan_cfg: dict):
        self.out = Path(out)
        self.director = make_director(plan_cfg)
        self.concurrency = int(plan_cfg["concurrency"])

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
            return {"plan_json": "", "plan_error": f"plan failed: {type(e).__name__}: {e}"[:2000]}
        meta["seconds"] = time.perf_counter() - t0
        record = {
            "album_id": album_id,
            "concept": str(row["concept"]),
            "inputs": inputs,
            "source": str(row["source"]),
            "plan": plan.model_dump(mode="json"),
            "director": meta,
        }
        save_plan(self.out, record)
        return {"plan_json": json.dumps(record), "plan_error": ""}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["album_id"]))]
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(rows)))) as pool:
            results = list(pool.map(self._plan_one, rows))
        batch["plan_json"] = np.array([r["plan_json"] for r in results], dtype=object)
        batch["plan_error"] = np.array([r["plan_error"] for r in results], dtype=object)
        return batch


def explode(row: dict, seed: int, done: dict[str, list[int]] | None = None) -> list[dict]:
    """One job row per work item of a planned album: item 0 is the cover, 1..N the tracks.

    ``done`` maps album_id to item numbers an earlier run finished: those are not redone.
    """
    album_id = str(row["album_id"])
    base = {"album_id": album_id, **RESULT_DEFAULTS}
    if row["plan_error"]:
        return [{**base, "kind": KIND_FAILED, "item_no": -1, "n_items": 1, "prompt": "",
                 "duration_s": 0.0, "seed": 0, "status": "failed", "error": str(row["plan_error"])}]
    plan = json.loads(str(row["plan_json"]))["plan"]
    items = [(0, KIND_COVER, plan["cover_prompt"], 0.0)]
    items += [(k, KIND_TRACK, t["music_prompt"], float(t["duration_s"])) for k, t in enumerate(plan["tracks"], 1)]
    skip = set((done or {}).get(album_id, ()))
    todo = [it for it in items if it[0] not in skip]
    return [
        {**base, "kind": kind, "item_no": no, "n_items": len(todo), "prompt": prompt,
         "duration_s": dur, "seed": derive_seed(album_id, no, seed)}
        for no, kind, prompt, dur in todo
    ]
