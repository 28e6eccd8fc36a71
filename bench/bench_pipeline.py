"""Pipeline vs a plain sequential loop over the same models, in one run.

    python bench/bench_pipeline.py --albums 6            # tiny engine, CPU
    python bench/bench_pipeline.py --albums 20 --engine real   # on GPUs

Both paths plan with the same director, load the same models and encode the same
files; the pipeline batches tracks and covers on warm actors in Ray Data, the loop
calls the same actor classes one item at a time in this process. Prints minutes per
album for each, their ratio, and seconds per stage.
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

from actors.jobs import batch_of  # noqa: E402
from ray_jobs.planner import Planner, explode  # noqa: E402
from ray_jobs.config import RunConfig  # noqa: E402
from ray_jobs.generate import run  # noqa: E402

IDEAS = ["neon rain over a floating city", "a lighthouse keeper's last winter", "desert caravan at night",
         "a cozy cafe on a sunday morning", "the fall of a clockwork kingdom", "a forest festival of lanterns",
         "deep sea expedition", "a jazz bar in the rain", "mountain monastery at dawn", "a robot learning to dream"]


def sequential(concepts: list[str], cfg: RunConfig, out: Path) -> tuple[float, dict]:
    """The baseline: plan, then every track and cover one at a time, same models."""
    from actors.image import ImageActor
    from actors.music import MusicActor

    stages = defaultdict(float)
    t0 = time.perf_counter()
    music = MusicActor(str(out), cfg.music, str(cfg.tiny_cache))
    image = ImageActor(str(out), cfg.image, str(cfg.tiny_cache))
    stages["load"] = time.perf_counter() - t0
    planner = Planner(str(out), cfg.plan, cache_dir=str(out / "cache"))
    for k, concept in enumerate(concepts):
        t = time.perf_counter()
        row = {"album_id": [f"seq{k:04d}"], "concept": [concept], "source": [f"bench:{k}"], "inputs_json": ["{}"]}
        planned = planner({key: __import__("numpy").array(v, dtype=object) for key, v in row.items()})
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
    ap.add_argument("--engine", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--tracks", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--address", default="local", help="Ray address (default: a new local Ray, never a running one)")
    args = ap.parse_args()
    concepts = [f"{IDEAS[k % len(IDEAS)]} (album {k})" for k in range(args.albums)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = RunConfig.load(preset=args.engine, out=tmp / "pipeline",
                             **{"plan.tracks_per_album": args.tracks, "plan.track_seconds": args.seconds,
                                "plan.director": "offline", "ray_address": args.address})
        (tmp / "c.txt").write_text("\n".join(concepts) + "\n")
        t = time.perf_counter()
        summary = run(tmp / "c.txt", cfg)
        pipe_s = time.perf_counter() - t
        seq_s, seq_stages = sequential(concepts, cfg, tmp / "sequential")
    pipe_mpa = pipe_s / 60 / args.albums
    seq_mpa = seq_s / 60 / args.albums
    report = {
        "albums": args.albums, "tracks_per_album": args.tracks, "track_seconds": args.seconds,
        "engine": args.engine, "pipeline_ok": summary.n_ok,
        "pipeline_min_per_album": round(pipe_mpa, 4), "sequential_min_per_album": round(seq_mpa, 4),
        "speedup_sequential_over_pipeline": round(seq_mpa / pipe_mpa, 2),
        "pipeline_stage_s (summed over actors)": {k: round(v, 2) for k, v in summary.stage_s.items()},
        "sequential_stage_s": {k: round(v, 2) for k, v in seq_stages.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
