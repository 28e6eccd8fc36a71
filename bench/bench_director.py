"""Director benchmark: concepts planned per minute against a server with a set latency.

A loopback OpenAI-compatible server (``tests/openai_server.py``) answers every request
after ``--latency`` seconds; the real ``openai`` client and the real ``Planner`` plan
``--concepts`` distinct concepts with a fresh cache: in process (``Planner.__call__`` on
consecutive batches of ``plan.concurrency`` rows) or, with ``--ray``, as the plan stage
of the generate job in Ray Data. The serial baseline is the same Planner at concurrency 1
(in process), timed on ``--serial-sample`` concepts and extrapolated (``--serial-sample
0`` plans all of them one after another).

    .venv/bin/python bench/bench_director.py                       # 200 concepts, 1.5 s, concurrency 32
    .venv/bin/python bench/bench_director.py --concurrency 8,32,64 --jitter 1.0
    .venv/bin/python bench/bench_director.py --ray                 # through Ray Data, as in the job
    .venv/bin/python bench/bench_director.py --answers minimal --concepts 40 --latency 0.05

Every run reports the re-asks per album: answers that failed validation and were asked
again (a failed album's last invalid answer is not re-asked).
``--answers minimal`` makes the server answer the minimal JSON that each request's
schema allows (a guided-decoding server at its most literal): the re-asks then measure
how much the validator asks beyond the schema it sends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from openai_server import ScriptedOpenAI, good_answer, minimal_answer  # noqa: E402

from director.llm import forget_server_formats  # noqa: E402
from director.plan import load_failed_plan  # noqa: E402
from ray_jobs.planner import Planner  # noqa: E402
from albumforge.config import PlanConfig  # noqa: E402


def plan_cfg(out: Path, concurrency: int, steps: str) -> dict:
    """The Planner's constructor arguments: the plan section and the answer cache."""
    plan = PlanConfig(director="openai", director_model="bench-model", concurrency=concurrency, steps=steps,
                      timeout_s=30.0, retry_backoff_s=0.05)
    return {"plan": plan, "cache_dir": str(out / "cache" / "director")}


def concept_rows(n: int, tag: str) -> list[dict]:
    return [{"album_id": f"{tag}-{k:04d}", "concept": f"concept {k} of run {tag}: a harbour at night",
             "source": f"bench.txt:{k + 1}", "inputs_json": json.dumps({"genre": "dub techno"})} for k in range(n)]


_INVALID = re.compile(r"^\w+ answer \d+: ")  # director meta "errors": one per answer that failed validation


def answers_of(out: Path, album_id: str, plan_json: str) -> int:
    """Re-asks one album took: its invalid answers, less the last one of a failed plan
    (read from the saved plan's, or the failed plan's, director accounting)."""
    meta = json.loads(plan_json)["director"] if plan_json else (load_failed_plan(out, album_id) or {}).get("director", {})
    invalid = sum(bool(_INVALID.match(str(e))) for e in meta.get("errors") or [])
    return max(0, invalid - (0 if plan_json else 1))


def plan_in_process(rows: list[dict], concurrency: int, steps: str) -> tuple[float, int, list[int]]:
    """Planner.__call__ on consecutive batches of ``concurrency`` rows (as Ray Data does)."""
    with tempfile.TemporaryDirectory() as tmp:
        planner = Planner(tmp, **plan_cfg(Path(tmp), concurrency, steps))
        t0 = time.perf_counter()
        failed, answers = 0, []
        for i in range(0, len(rows), concurrency):
            chunk = rows[i:i + concurrency]
            batch = {k: np.array([r[k] for r in chunk], dtype=object) for k in chunk[0]}
            out = planner(batch)
            failed += sum(bool(e) for e in out["plan_error"])
            answers += [answers_of(Path(tmp), a, p) for a, p in zip(out["album_id"], out["plan_json"])]
        return time.perf_counter() - t0, failed, answers


def plan_with_ray(rows: list[dict], concurrency: int, steps: str, overlap: int = 0) -> tuple[float, int, list[int]]:
    """The plan stage of the generate job alone: from_items -> map_batches(Planner).

    ``overlap`` 0 mirrors the job (ray_jobs/generate.py): one album per block and per
    call, ``concurrency`` calls at once on one threaded actor. ``overlap`` k >= 1: batches
    of ``concurrency`` albums, k calls at once (1: the pre-threaded shape).
    """
    import ray
    from ray.data import ActorPoolStrategy

    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False)
    if overlap == 0:
        blocks, batch, calls = len(rows), 1, concurrency
    else:
        blocks, batch, calls = max(1, min(len(rows), 64)), concurrency, overlap
    with tempfile.TemporaryDirectory() as tmp:
        ds = ray.data.from_items(rows, override_num_blocks=blocks)
        ds = ds.map_batches(Planner, fn_constructor_kwargs={"out": tmp, **plan_cfg(Path(tmp), concurrency, steps)},
                            batch_size=batch, num_cpus=0.25,
                            compute=ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=max(2, calls),
                                                      max_concurrent_calls_per_actor=calls,
                                                      enable_true_multi_threading=calls > 1),
                            batch_format="numpy")
        t0 = time.perf_counter()
        failed, answers = 0, []
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            failed += sum(bool(e) for e in b["plan_error"])
            answers += [answers_of(Path(tmp), a, p) for a, p in zip(b["album_id"], b["plan_json"])]
        return time.perf_counter() - t0, failed, answers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concepts", type=int, default=200)
    p.add_argument("--latency", type=float, default=1.5, help="seconds the server takes per answer")
    p.add_argument("--jitter", type=float, default=0.0, help="extra random latency, 0..JITTER s")
    p.add_argument("--concurrency", default="32", help="comma list, e.g. 8,32,64")
    p.add_argument("--serial-sample", type=int, default=20, help="concepts timed at concurrency 1 (0: all)")
    p.add_argument("--steps", choices=["single", "chain"], default="single")
    p.add_argument("--answers", choices=["good", "minimal"], default="good",
                   help="good: a full valid plan; minimal: the minimal JSON each request's schema allows")
    p.add_argument("--ray", action="store_true", help="run the plan stage through Ray Data")
    p.add_argument("--overlap", type=int, default=0,
                   help="with --ray: 0 = the job's shape (one album a call, `concurrency` calls at once); "
                        "k = batches of `concurrency` albums, k calls at once")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("director.plan").setLevel(logging.ERROR)  # one warning per failed album: counted instead
    if args.ray:
        def plan(rows, c, steps):
            return plan_with_ray(rows, c, steps, args.overlap)
    else:
        plan = plan_in_process
    requests_per_album = 1 if args.steps == "single" else 5

    default = minimal_answer if args.answers == "minimal" else good_answer

    def reasks(counts: list[int]) -> str:
        return f"{sum(counts) / len(counts):.2f} re-asks/album" if counts else "no albums"

    with ScriptedOpenAI(default=default, latency_s=args.latency, latency_jitter_s=args.jitter) as srv:
        os.environ["OPENAI_BASE_URL"] = srv.url
        os.environ.setdefault("OPENAI_API_KEY", "bench-not-a-key")
        forget_server_formats()
        n_serial = args.serial_sample or args.concepts
        # one after another: the same Planner at concurrency 1, in process (no Ray start-up in it)
        serial_s, serial_failed, serial_answers = plan_in_process(concept_rows(n_serial, "serial"), 1, args.steps)
        serial_rate = 60.0 * n_serial / serial_s
        print(f"server latency {args.latency:g} s (+0..{args.jitter:g} s), {args.steps} mode "
              f"({requests_per_album} request(s) per album), {args.answers} answers, {(f'Ray Data (overlap {args.overlap})' if args.overlap else 'Ray Data, the job shape') if args.ray else 'in-process Planner'}")
        print(f"serial:  {n_serial} concepts in {serial_s:.1f} s = {serial_rate:.1f} concepts/min"
              + (" (extrapolated to the batch)" if n_serial < args.concepts else "")
              + (f", {serial_failed} failed" if serial_failed else "") + f"; {reasks(serial_answers)}")
        for c in [int(x) for x in args.concurrency.split(",")]:
            srv.max_in_flight = 0
            wall, failed, answers = plan(concept_rows(args.concepts, f"c{c}"), c, args.steps)
            rate = 60.0 * args.concepts / wall
            ideal = 60.0 / (args.latency * requests_per_album) * c
            print(f"concurrency {c:3d}: {args.concepts} concepts in {wall:.1f} s = {rate:.0f} concepts/min, "
                  f"{rate / serial_rate:.1f}x serial (ideal {c}x; {rate / ideal:.0%} of the latency bound), "
                  f"max {srv.max_in_flight} requests in flight" + (f", {failed} FAILED" if failed else "")
                  + f"; {reasks(answers)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
