"""Actor-side helpers for job rows (the row contract itself is ``albumforge.rows``):
who made a row, a writable copy of a Ray batch, and batch <-> row lists."""

from __future__ import annotations

import numpy as np

from albumforge.rows import RESULT_DEFAULTS


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


def writable(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of the batch whose result columns an actor may fill in place (Ray hands
    read-only arrays; text columns become object arrays so any length fits)."""
    batch = dict(batch)
    for col, default in RESULT_DEFAULTS.items():
        batch[col] = batch[col].astype(object if isinstance(default, str) else type(default), copy=True)
    return batch


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: batch[k][i] for k in keys} for i in range(n)]


def batch_of(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = list(rows[0])
    return {k: np.array([r[k] for r in rows]) for k in keys}
