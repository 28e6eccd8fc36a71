"""`ray job submit` against a head this test starts on loopback (and stops after)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from albumforge.parts import read_latest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head(tmp_path):
    """`ray start --head --block` in its own process group, stopped by killing that group:
    `ray stop` would also stop every other Ray on the machine (the test session's own)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port, dash = free_port(), free_port()
    # every port of our own: the session's Ray (conftest) already holds the defaults, and a
    # dashboard agent that cannot bind leaves the head with "No available agent to submit job"
    own_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    temp = Path("/tmp") / f"rayhead-{os.getpid()}"  # short: Ray's socket paths have a length limit
    start = [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
             "--num-cpus=3", "--num-gpus=0", f"--temp-dir={temp}", "--disable-usage-stats", *own_ports]
    head = subprocess.Popen(start, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the job API answers once the head is up
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited early"
                time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not come up in 120 s")
        yield address, env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_the_generate_job(ray_head, tiny_cache, tmp_path):
    address, env = ray_head
    concepts = tmp_path / "c.txt"
    concepts.write_text("A harbor town waking up in fog\nA night train through snowy mountains\n")
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", address,
           "--working-dir", str(REPO), "--",
           sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", str(out),
           "--tiny-cache", str(tiny_cache), "--tracks", "2", "--seconds", "1", "--steps", "2"]
    for _ in range(15):  # the head's job agent may come up a little after its HTTP server
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)
        if "No available agent" not in result.stderr:
            break
        time.sleep(2)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "succeeded" in result.stdout.lower()
    assert "2 ok, 0 failed" in result.stdout  # the job's own summary line, streamed back
    albums = read_latest(out, "albums").to_pylist()
    assert len(albums) == 2 and {a["status"] for a in albums} == {"ok"}
    runs = read_latest(out, "runs").to_pylist()
    # the job joined the submitted-to cluster instead of starting its own
    import json

    assert json.loads(runs[0]["resources_json"])["cluster"]["CPU"] == 3.0
