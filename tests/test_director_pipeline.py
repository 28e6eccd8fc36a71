"""End to end: the generate job plans with the LLM director (scripted loopback server),
on its own local Ray with the tiny engines, and no API key reaches any file or log.

The job runs in a child process: its Ray workers must inherit this test's OPENAI_*
variables, and the session's Ray (conftest) must stay as it is for the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import ScriptedOpenAI, good, reply  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-albumforge-E2E-deadbeef-5ecret-0099"

CHILD = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
for name in ("openai", "httpx2", "httpcore2", "director"):
    logging.getLogger(name).setLevel(logging.DEBUG)
from director.plan import check_templates
from ray_jobs.concepts import read_concepts
from albumforge.config import RunConfig
from albumforge.parts import read_latest
from ray_jobs.generate import run
args = json.loads(sys.argv[1])
cfg = RunConfig.load(preset="tiny", **args["overrides"])
rows, _ = read_concepts(args["concepts"], cfg.plan_settings("openai"), cfg.seed)
check_templates(cfg.plan, rows)
s = run(args["concepts"], cfg)
print("SUMMARY " + json.dumps({"ok": s.n_ok, "failed": s.n_failed}))
"""

pytestmark = pytest.mark.slow


def test_generate_with_llm_director_and_no_key_leak(tmp_path, tiny_cache):
    from albumforge.parts import read_latest

    def answer(body):
        text = "\n".join(str(m["content"]) for m in body["messages"])
        return reply("no plan for you") if "doomed" in text else good()

    concepts = tmp_path / "concepts.csv"
    concepts.write_text("concept,genre,era\na harbour at night,dub techno,1990s\na doomed concept,polka,\n")
    out = tmp_path / "out"
    overrides = {"out": str(out), "tiny_cache": str(tiny_cache), "ray_address": "local",
                 "plan.director": "openai", "plan.director_model": "test-model", "plan.max_attempts": 2,
                 "plan.timeout_s": 5.0, "plan.retry_backoff_s": 0.01, "plan.lyrics": True,
                 "plan.tracks_per_album": 2, "plan.track_seconds": 2.0, "image.steps": 2}
    with ScriptedOpenAI(default=answer) as srv:
        env = {**os.environ, "OPENAI_BASE_URL": srv.url, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO),
               "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"concepts": str(concepts),
                                                                        "overrides": overrides})],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
        logs = proc.stdout + proc.stderr
        assert proc.returncode == 0, logs[-3000:]
        assert srv.requests and all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in srv.requests)
        assert "dub techno" in str(srv.bodies) and "1990s" in str(srv.bodies)

    summary = json.loads(logs.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary == {"ok": 1, "failed": 1}
    albums = {r["concept"]: r for r in read_latest(out, "albums").to_pylist()}
    ok, failed = albums["a harbour at night"], albums["a doomed concept"]
    assert (ok["director"], ok["director_model"], ok["director_attempts"]) == ("openai", "test-model", 1)
    assert ok["tokens_in"] > 0 and ok["tokens_out"] > 0
    assert failed["status"] == "failed" and "no valid AlbumPlan in 2 answers" in failed["error"]
    assert (out / "plans" / f"{ok['album_id']}.json").exists()

    files = [p for p in out.rglob("*") if p.is_file()]
    ray_logs = Path("/tmp/ray/session_latest/logs")  # the child's session: the newest
    worker_logs = [p for p in ray_logs.rglob("*") if p.is_file()] if ray_logs.exists() else []
    assert any(b"no valid AlbumPlan" in p.read_bytes() for p in worker_logs + files)  # the Planner's warning
    assert not [p for p in files + worker_logs if KEY.encode() in p.read_bytes()]
    assert KEY not in logs
