"""End to end: the generate job plans with the LLM director (scripted loopback server),
on a local Ray with the tiny engines, and no API key reaches any file or log."""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_server import ScriptedOpenAI, good, reply  # noqa: E402

KEY = "sk-albumforge-E2E-deadbeef-5ecret-0099"

pytestmark = pytest.mark.slow


def test_generate_with_llm_director_and_no_key_leak(tmp_path, monkeypatch, capfd, caplog):
    import ray

    from director.plan import check_templates
    from ray_jobs import manifest as mf
    from ray_jobs.concepts import read_concepts
    from ray_jobs.config import RunConfig
    from ray_jobs.generate import run

    faulthandler.dump_traceback_later(300, exit=True)
    caplog.set_level("DEBUG")

    def answer(body):
        text = "\n".join(str(m["content"]) for m in body["messages"])
        return reply("no plan for you") if "doomed" in text else good()

    concepts = tmp_path / "concepts.csv"
    concepts.write_text("concept,genre,era\na harbour at night,dub techno,1990s\na doomed concept,polka,\n")
    with ScriptedOpenAI(default=answer) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        cfg = RunConfig.load(preset="tiny", out=tmp_path / "out", **{
            "plan.director": "openai", "plan.director_model": "test-model", "plan.max_attempts": 2,
            "plan.timeout_s": 5.0, "plan.retry_backoff_s": 0.01, "plan.lyrics": True})
        rows, _ = read_concepts(concepts, cfg.plan_settings("openai"), cfg.seed)
        check_templates(cfg.plan, rows)
        if ray.is_initialized():  # workers must inherit this test's environment
            ray.shutdown()
        try:
            summary = run(concepts, cfg)
        finally:
            ray.shutdown()
            faulthandler.cancel_dump_traceback_later()
        assert srv.requests and all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in srv.requests)
        assert "dub techno" in str(srv.bodies) and "1990s" in str(srv.bodies)

    assert (summary.n_ok, summary.n_failed) == (1, 1)
    albums = {r["concept"]: r for r in mf.read_manifest(cfg.out, "albums").to_pylist()}
    ok, failed = albums["a harbour at night"], albums["a doomed concept"]
    assert (ok["director"], ok["director_model"], ok["director_attempts"]) == ("openai", "test-model", 1)
    assert ok["tokens_in"] > 0 and ok["tokens_out"] > 0
    assert failed["status"] == "failed" and "no valid AlbumPlan in 2 answers" in failed["error"]
    assert (cfg.out / "plans" / f"{ok['album_id']}.json").exists()

    out_files = [p for p in cfg.out.rglob("*") if p.is_file()]
    leaks = [p for p in out_files if KEY.encode() in p.read_bytes()]
    ray_logs = Path("/tmp/ray/session_latest/logs")
    if ray_logs.exists():
        leaks += [p for p in ray_logs.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    captured = capfd.readouterr()
    assert not leaks
    assert KEY not in captured.out + captured.err + caplog.text
