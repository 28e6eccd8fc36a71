"""How busy the GPUs were: per-actor and per-card figures from the rows' ``busy`` notes.

Each GPU actor times its model calls and notes them on the rows of each group it makes
(``actors.faults.GuardedStage``). The driver feeds every row's note to a ``BusyLog``;
at the run's end it gives, per actor: busy seconds (the union of its call spans, so
never more than its wall seconds), wall seconds (from the actor's start to the run's
end), load seconds, batches (groups), calls, items made, node, GPU ids, peak GPU
memory, its merged call spans and its work spans (whole groups, writing included); and per card (node and GPU ids): the union of its actors' spans against the
time since its first actor started. Neutral ground: no torch, no Ray.
"""

from __future__ import annotations

import json
from collections import defaultdict


def union(spans) -> list[list[float]]:
    """The union of [start, end] spans, sorted and merged."""
    out: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def length(spans) -> float:
    return sum(b - a for a, b in union(spans))


class BusyLog:
    """Collects the busy notes of the rows a run receives (each row once)."""

    def __init__(self):
        self.actors: dict[str, dict] = {}

    def add(self, note: str | None, ok: bool = True) -> None:
        if not note:
            return
        n = json.loads(str(note))
        a = self.actors.setdefault(n["actor"], {
            "actor": n["actor"], "kind": n["kind"], "node": n.get("node"), "gpu_ids": list(n.get("gpu_ids") or []),
            "started": n["started"], "ready": n.get("ready"), "groups": set(), "spans": set(), "work": set(), "items": 0,
            "failed": 0, "peak_gpu_bytes": None})
        a["started"] = min(a["started"], n["started"])  # a restarted actor keeps its id: its first start
        a["groups"].add(n["group"])
        a["spans"].update((s[0], s[1]) for s in n["spans"])
        if n.get("work"):
            a["work"].add(tuple(n["work"]))
        a["items" if ok else "failed"] += 1
        if n.get("peak_gpu_bytes") is not None:
            a["peak_gpu_bytes"] = max(a["peak_gpu_bytes"] or 0, int(n["peak_gpu_bytes"]))

    def summary(self, end: float) -> list[dict]:
        """One dict per actor (JSON-ready), at the run's ``end`` (a time.time())."""
        out = []
        for a in sorted(self.actors.values(), key=lambda a: (a["kind"], a["node"] or "", a["actor"])):
            spans = union(a["spans"])
            last = max([end, *(b for _, b in spans)])
            out.append({
                "actor": a["actor"], "kind": a["kind"], "node": a["node"], "gpu_ids": a["gpu_ids"],
                "started": a["started"], "load_s": (a["ready"] - a["started"]) if a["ready"] else None,
                "wall_s": last - a["started"], "busy_s": sum(b - a_ for a_, b in spans),
                "batches": len(a["groups"]), "calls": len(a["spans"]), "items": a["items"], "failed": a["failed"],
                "peak_gpu_bytes": a["peak_gpu_bytes"], "spans": [[round(x, 4), round(y, 4)] for x, y in spans],
                "work": union(a["work"]),  # whole groups: model calls plus the CPU work around them
            })
        return out


def card_of(actor: dict) -> str | None:
    """"<node>/<gpu ids>" of an actor that holds a GPU (None: a CPU-only actor)."""
    return f"{actor['node']}/{','.join(map(str, actor['gpu_ids']))}" if actor.get("gpu_ids") else None


def cards(actors: list[dict], end: float) -> dict[str, dict]:
    """Per card: busy seconds (its actors' spans, merged) and held seconds (first start to end)."""
    spans, start = defaultdict(list), {}
    for a in actors:
        card = card_of(a)
        if card is None:
            continue
        spans[card] += a["spans"]
        start[card] = min(start.get(card, a["started"]), a["started"])
    out = {}
    for card in sorted(start):
        busy = length(spans[card])
        held = max(end - start[card], busy)
        out[card] = {"busy_s": busy, "held_s": held, "share": busy / held if held > 0 else None}
    return out


def totals(actors: list[dict], end: float) -> dict:
    """The run row's figures: GPU busy and held seconds summed over cards."""
    per_card = cards(actors, end)
    busy = sum(c["busy_s"] for c in per_card.values())
    held = sum(c["held_s"] for c in per_card.values())
    return {"gpu_busy_s": busy if per_card else None, "gpu_held_s": held if per_card else None}
