"""Pipeline vs a plain sequential loop vs the seed's pattern, over the same models, in one run.

    python bench/bench_pipeline.py --albums 6            # tiny engine, CPU
    python bench/bench_pipeline.py --albums 20 --engine real   # on GPUs
    python bench/bench_pipeline.py --albums 6 --engine sim --time-scale 0.01   # V100 cost model

Every path plans with the same director, loads the same models and encodes the same
files. The pipeline batches tracks and covers on warm actors in Ray Data; the loop calls
the same actor classes one item at a time in this process, models loaded once; the seed's
pattern (what the system this replaced ran) loads the models again for every album, then
makes that album item by item. Prints minutes per album for each, the ratios, and seconds
per stage (sim engine: real seconds, i.e. modelled seconds x the time scale).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from actors.jobs import batch_of  # noqa: E402
from ray_jobs.planner import Planner, explode  # noqa: E402
from albumforge.config import RunConfig  # noqa: E402
from ray_jobs.generate import run  # noqa: E402

IDEAS = ["neon rain over a floating city", "a lighthouse keeper's last winter", "desert caravan at night",
         "a cozy cafe on a sunday morning", "the fall of a clockwork kingdom", "a forest festival of lanterns",
         "deep sea expedition", "a jazz bar in the rain", "mountain monastery at dawn", "a robot learning to dream"]


def _load(cfg: RunConfig, out: Path):
    from actors.image import ImageActor
    from actors.music import MusicActor

    scale = cfg.sim.time_scale
    return (MusicActor(str(out), cfg.music, str(cfg.tiny_cache), time_scale=scale),
            ImageActor(str(out), cfg.image, str(cfg.tiny_cache), time_scale=scale))


def sequential(concepts: list[str], cfg: RunConfig, out: Path, reload_per_album: bool = False) -> tuple[float, dict]:
    """Plan, then every track and cover one at a time, same models; ``reload_per_album``:
    the seed's pattern, the models loaded again before every album."""
    stages = defaultdict(float)
    t0 = time.perf_counter()
    planner = Planner(str(out), cfg.plan, cache_dir=str(out / "cache"), time_scale=cfg.sim.time_scale)
    models = None
    for k, concept in enumerate(concepts):
        if models is None or reload_per_album:
            t = time.perf_counter()
            models = None  # the previous album's models go first, as in a fresh process
            models = _load(cfg, out)
            stages["load"] += time.perf_counter() - t
        music, image = models
        t = time.perf_counter()
        row = {"album_id": [f"seq{k:04d}"], "concept": [concept], "source": [f"bench:{k}"], "inputs_json": ["{}"]}
        planned = planner({key: np.array(v, dtype=object) for key, v in row.items()})
        stages["plan"] += time.perf_counter() - t
        rows = explode({key: planned[key][0] for key in planned}, cfg.seed)
        for job in rows:
            t = time.perf_counter()
            (music if job["kind"] == "track" else image)(batch_of([job]))
            stages["music" if job["kind"] == "track" else "image"] += time.perf_counter() - t
    return time.perf_counter() - t0, dict(stages)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--albums", type=int, default=6)
    ap.add_argument("--engine", choices=["tiny", "real", "sim"], default="tiny")
    ap.add_argument("--time-scale", type=float, default=1.0, help="sim engine: real seconds per modelled second")
    ap.add_argument("--tracks", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--address", default="local", help="Ray address (default: a new local Ray, never a running one)")
    args = ap.parse_args()
    concepts = [f"{IDEAS[k % len(IDEAS)]} (album {k})" for k in range(args.albums)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = RunConfig.load(preset=args.engine, out=tmp / "pipeline",
                             **{"plan.tracks_per_album": args.tracks, "plan.track_seconds": args.seconds,
                                "ray_address": args.address, "sim.time_scale": args.time_scale,
                                **({} if args.engine == "sim" else {"plan.director": "offline"})})
        (tmp / "c.txt").write_text("\n".join(concepts) + "\n")
        t = time.perf_counter()
        summary = run(tmp / "c.txt", cfg)
        pipe_s = time.perf_counter() - t
        seq_s, seq_stages = sequential(concepts, cfg, tmp / "sequential")
        seed_s, seed_stages = sequential(concepts, cfg, tmp / "seed", reload_per_album=True)
    pipe_mpa = pipe_s / 60 / args.albums
    seq_mpa = seq_s / 60 / args.albums
    seed_mpa = seed_s / 60 / args.albums
    report = {
        "albums": args.albums, "tracks_per_album": args.tracks, "track_seconds": args.seconds,
        "engine": args.engine, "pipeline_ok": summary.n_ok,
        "pipeline_min_per_album": round(pipe_mpa, 4), "sequential_min_per_album": round(seq_mpa, 4),
        "seed_pattern_min_per_album (models loaded per album)": round(seed_mpa, 4),
        "speedup_sequential_over_pipeline": round(seq_mpa / pipe_mpa, 2),
        "speedup_seed_pattern_over_pipeline": round(seed_mpa / pipe_mpa, 2),
        "pipeline_stage_s (summed over actors)": {k: round(v, 2) for k, v in summary.stage_s.items()},
        "sequential_stage_s": {k: round(v, 2) for k, v in seq_stages.items()},
        "seed_pattern_stage_s": {k: round(v, 2) for k, v in seed_stages.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
