"""Job rows: what flows between the plan stage, the actors and the driver.

A plan explodes into one row per work item (the cover, each track). Every row carries
the same columns, so Ray Data blocks share one schema whatever their mix; each actor
fills the result columns of its own kind of row and passes the others through.
"""

from __future__ import annotations

import hashlib

import numpy as np

KIND_TRACK = "track"
KIND_COVER = "cover"
KIND_ART = "art"  # one image per track (item_no = track number, prompt = its visual prompt)
KIND_FAILED = "plan_failed"  # an album whose plan failed: passed through to the driver

# result columns every row carries from the start (filled by the actor that owns the row)
RESULT_DEFAULTS = {
    "status": "pending",
    "error": "",
    "path": "",
    "paths": "",  # "|"-joined relative paths of every format written
    "actual_s": 0.0,
    "sample_rate": 0,
    "width": 0,
    "height": 0,
    "gen_s": 0.0,
    "encode_s": 0.0,
    "worker": "",  # JSON: which actor (pid, GPU ids, start time) and when it finished the row
    "prompt_note": "",  # images: how a prompt past CLIP's 77 tokens was handled ("" = it fit)
    "score": float("nan"),  # images: CLIP score against the prompt (NaN = not scored)
    "lufs": float("nan"),  # tracks: integrated loudness after mastering (NaN = not measured, e.g. < 0.4 s)
    "windows": "",  # tracks: JSON window plan (window_s, stride_s, context_s, crossfade_s, windows [[start_s, end_s]])
}


def worker_info(actor: str) -> dict:
    """Who this actor is, for the manifests: pid, node, the GPU ids Ray assigned it."""
    import os
    import time

    info = {"actor": actor, "pid": os.getpid(), "started": time.time(), "gpu_ids": []}
    try:
        import ray

        if ray.is_initialized():
            info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
            info["node"] = ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # outside Ray (tests call actors directly)
        pass
    return info


def reroll_key(kind: str, item_no: int) -> str:
    """Key of an image in ``Finished.rerolls``: "cover" or "art:N"."""
    return "cover" if kind == KIND_COVER else f"{kind}:{int(item_no)}"


def item_seed(album_id: str, kind: str, item_no: int, base_seed: int, reroll: int = 0) -> int:
    """The seed of a job row. Cover and tracks keep ``derive_seed(album_id, item_no, seed)``;
    art gets its own stream; each re-roll of an image draws a new seed."""
    parts = [album_id, item_no, base_seed] if kind != KIND_ART else [album_id, "art", item_no, base_seed]
    if reroll:
        parts += ["reroll", int(reroll)]
    return derive_seed(*parts)


def writable(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of the batch whose result columns an actor may fill in place (Ray hands
    read-only arrays; text columns become object arrays so any length fits)."""
    batch = dict(batch)
    for col, default in RESULT_DEFAULTS.items():
        batch[col] = batch[col].astype(object if isinstance(default, str) else type(default), copy=True)
    return batch


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (album id, item number, base seed)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: batch[k][i] for k in keys} for i in range(n)]


def batch_of(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = list(rows[0])
    return {k: np.array([r[k] for r in rows]) for k in keys}


def media_dir(album_id: str) -> str:
    """Relative folder of an album's media (album ids are hex, so always path-safe)."""
    if not album_id.isalnum():
        raise ValueError(f"album_id {album_id!r} is not a safe path component")
    return f"media/{album_id}"
