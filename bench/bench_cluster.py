"""A simulated V100 cluster: how busy the pipeline keeps its GPUs, with no GPU.

    python bench/bench_cluster.py                       # 200 concepts, 4 nodes x 2 GPUs
    python bench/bench_cluster.py --concepts 40 --time-scale 0.05 -- --music-batch 4

Starts a ``ray.cluster_utils.Cluster`` (a 1-CPU head with no GPU, and ``--nodes`` nodes of
``--gpus`` logical GPUs each), runs the real CLI against it with the ``sim`` engine (no
weights: every model call sleeps what the real model costs on a V100, albumforge/costs.py,
times ``--time-scale``), and prints JSON in *modelled V100 seconds* (measured / time scale):

- minutes per album;
- GPU busy share per card and overall, after start-up (from each card's first model call)
  and over the whole run; makespan against the ideal (total GPU work / cards);
- start-up in real seconds (before a card's first call: Ray, actor processes, imports,
  model loads, the first plans: mostly process starts on this machine, so not scaled);
- idle card time after each card's first call, by cause: actor CPU work (gaps inside a group: mastering, encoding,
  writing, *not* scaled by the time scale, so a small time scale on a busy 2-core box
  overstates it), planner starvation (a gap when fewer planned items were waiting than
  the stage's actors take in one batch each), stage imbalance (a gap while planned work
  waited elsewhere: in the other stage, in a block, behind another actor), and tail
  (after a card's last call, until the run ended).

Arguments after ``--`` go to ``albumforge generate`` (e.g. ``--music-batch 4``). A
scheduling model, never a model test: the figures say how the pipeline schedules work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from albumforge import manifest as mf  # noqa: E402
from albumforge.busy import card_of, length, union  # noqa: E402
from albumforge.parts import read_latest

IDEAS = ["neon rain over a floating city", "a lighthouse keeper's last winter", "desert caravan at night",
         "a cozy cafe on a sunday morning", "the fall of a clockwork kingdom", "a forest festival of lanterns",
         "deep sea expedition", "a jazz bar in the rain", "mountain monastery at dawn", "a robot learning to dream"]


def start_cluster(nodes: int, gpus: int, cpus: float):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus, num_gpus=gpus)
    cluster.wait_for_nodes()
    return cluster


def _done_times(out: Path) -> dict[str, list[float]]:
    """When each item of each stage was written: music (tracks), image (covers, art)."""
    times = {"MusicActor": [], "ImageActor": []}
    for t in read_latest(out, "tracks").to_pylist():
        if t["status"] == mf.STATUS_OK and t["worker"]:
            times["MusicActor"].append(json.loads(t["worker"])["done"])
        if t["art_worker"]:
            times["ImageActor"].append(json.loads(t["art_worker"])["done"])
    for a in read_latest(out, "albums").to_pylist():
        if a["cover_worker"]:
            times["ImageActor"].append(json.loads(a["cover_worker"])["done"])
    return {k: sorted(v) for k, v in times.items()}


def _planned_times(out: Path, track_art: bool) -> dict[str, list[float]]:
    """When each planned item became available to its stage (its plan file was saved)."""
    times = {"MusicActor": [], "ImageActor": []}
    for path in (out / "plans").glob("*.json"):
        if path.name.endswith(".failed.json"):
            continue
        n = len(json.loads(path.read_text())["plan"]["tracks"])
        t = path.stat().st_mtime
        times["MusicActor"] += [t] * n
        times["ImageActor"] += [t] * (1 + (n if track_art else 0))
    return {k: sorted(v) for k, v in times.items()}


def idle_causes(actors: list[dict], start: float, end: float, planned: dict, done: dict, per_batch: dict) -> dict:
    """Idle card seconds by cause (see the module docstring), summed over cards."""
    causes = dict.fromkeys(("start_up", "actor_cpu_work", "planner_starvation", "stage_imbalance", "tail"), 0.0)
    by_card: dict[str, list[dict]] = {}
    for a in actors:
        if card_of(a):
            by_card.setdefault(card_of(a), []).append(a)
    for members in by_card.values():
        busy = union([s for a in members for s in a["spans"]])
        if not busy:
            causes["start_up"] += end - start
            continue
        causes["start_up"] += busy[0][0] - start
        causes["tail"] += max(0.0, end - busy[-1][1])
        work = union([w for a in members for w in a["work"]])
        kinds = {a["kind"] for a in members}
        for (_, a), (b, _) in zip(busy, busy[1:]):
            inside = length([[max(a, x), min(b, y)] for x, y in work if min(b, y) > max(a, x)])
            causes["actor_cpu_work"] += inside
            mid = (a + b) / 2
            waiting = sum(bisect_right(planned[k], mid) - bisect_right(done[k], mid) for k in kinds)
            room = sum(per_batch[k] * sum(1 for m in actors if m["kind"] == k) for k in kinds)
            causes["planner_starvation" if waiting <= room else "stage_imbalance"] += (b - a) - inside
    return causes


def report(out: Path, time_scale: float) -> dict:
    run = read_latest(out, "runs").to_pylist()[-1]
    cfg = json.loads(run["config_json"])
    actors = json.loads(run["actors_json"])
    start, end = run["started_at"].timestamp(), run["finished_at"].timestamp()
    s = 1.0 / time_scale  # measured seconds -> modelled V100 seconds
    cards: dict[str, list] = {}
    for a in actors:
        if card_of(a):
            cards.setdefault(card_of(a), []).extend(a["spans"])
    per_card, after_num, after_den = {}, 0.0, 0.0
    for card, spans in sorted(cards.items()):
        merged = union(spans)
        busy = length(merged)
        after = end - merged[0][0] if merged else 0.0
        per_card[card] = round(busy / after, 3) if after else None
        after_num, after_den = after_num + busy, after_den + after
    gpu_work = sum(length(sp) for sp in cards.values())
    n_cards = len(cards) or 1
    makespan = end - start
    first_call = min((s_[0] for sp in cards.values() for s_ in sp), default=start)
    after_start = end - first_call
    per_batch = {"MusicActor": cfg["music"]["batch_size"], "ImageActor": cfg["image"]["batch_size"]}
    causes = idle_causes(actors, start, end, _planned_times(out, cfg["image"]["track_art"]),
                         _done_times(out), per_batch)
    kinds = sorted({a["kind"] for a in actors})
    return {
        "albums_ok": run["n_ok"], "albums_failed": run["n_failed"], "tracks": run["n_tracks"],
        "music_model": run["music_model"], "time_scale": time_scale,
        "min_per_album (modelled)": round(makespan * s / 60 / max(1, run["n_ok"]), 3),
        "gpus": len(cards),
        "gpu_busy_share_after_start_up": round(after_num / after_den, 3) if after_den else None,
        "gpu_busy_share_whole_run": round(run["gpu_busy_s"] / run["gpu_held_s"], 3) if run["gpu_held_s"] else None,
        "gpu_busy_share_per_gpu (after start-up)": per_card,
        "makespan_s (modelled)": round(makespan * s, 1),
        "makespan_after_start_up_s (modelled, from the first model call)": round(after_start * s, 1),
        "ideal_s (gpu work / gpus, modelled)": round(gpu_work * s / n_cards, 1),
        "makespan_over_ideal (after start-up)": round(after_start / (gpu_work / n_cards), 3) if gpu_work else None,
        # start-up is mostly process starts and imports on this machine: not scaled, so in real seconds
        "start_up_real_s (mean per gpu, before its first call)": round(causes.pop("start_up") / n_cards, 1),
        "idle_gpu_s_by_cause (modelled, summed over gpus, after each gpu's first call)":
            {k: round(v * s, 1) for k, v in causes.items()},
        "per_stage": {k: {"actors": sum(1 for a in actors if a["kind"] == k),
                          "busy_s (modelled)": round(sum(a["busy_s"] for a in actors if a["kind"] == k) * s, 1),
                          "batches": sum(a["batches"] for a in actors if a["kind"] == k),
                          "items": sum(a["items"] for a in actors if a["kind"] == k),
                          "load_s (modelled)": round(max((a["load_s"] or 0) for a in actors if a["kind"] == k) * s, 1)}
                      for k in kinds},
        "settings": {"music.batch_size": cfg["music"]["batch_size"], "image.batch_size": cfg["image"]["batch_size"],
                     "plan.concurrency": cfg["plan"]["concurrency"],
                     "tracks_per_album": cfg["plan"]["tracks_per_album"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=2, help="logical GPUs per node")
    ap.add_argument("--cpus", type=float, default=4, help="logical CPUs per node")
    ap.add_argument("--time-scale", type=float, default=0.25,
                    help="real seconds per modelled V100 second (smaller: faster, but the unscaled CPU work weighs more)")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds before the run is stopped")
    ap.add_argument("--keep", type=Path, help="keep OUT here (default: a temp folder)")
    ap.add_argument("generate_args", nargs="*", help="after --: more flags of albumforge generate")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = args.keep or tmp / "out"
        concepts = tmp / "c.txt"
        concepts.write_text("\n".join(f"{IDEAS[k % len(IDEAS)]} (album {k})" for k in range(args.concepts)) + "\n")
        cluster = start_cluster(args.nodes, args.gpus, args.cpus)
        try:
            cmd = [sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", str(out), "--engine", "sim",
                   "--time-scale", str(args.time_scale), "--address", cluster.address, "-q", *args.generate_args]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  cwd=Path(__file__).resolve().parent.parent)
            wall = time.perf_counter() - t0
        finally:
            cluster.shutdown()
        if proc.returncode not in (0, 1):
            sys.exit(f"generate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        result = report(out, args.time_scale)
        result["bench_wall_s (real)"] = round(wall, 1)
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
