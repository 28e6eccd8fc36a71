"""Unattended batches (issue 8): every failure ends, is named, and loses no finished work.

Each run here is the real CLI in a subprocess with its own local Ray (or a
``ray.cluster_utils.Cluster``), so crashes, signals and lost nodes hit real processes.
Native crashes are injected into Ray workers by ``tests/fault_inject/sitecustomize.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from albumforge.parts import read_latest
from tests.conftest import require_services

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CONCEPTS = ["A lighthouse keeper's last winter", "Neon rain over a harbour city", "Moss growing on old satellites",
            "A choir of tired robots", "Dust storms on a red farm", "Glass bells under the sea"]
FLAGS = ["--tracks", "2", "--seconds", "2", "--steps", "2", "--music-batch", "4", "--image-batch", "2"]


def _env(**extra) -> dict:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **extra}


def _cmd(concepts: Path, out: Path, tiny_cache: Path, *extra: str, address: str = "local") -> list[str]:
    return [sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", str(out),
            "--tiny-cache", str(tiny_cache), *FLAGS, "--address", address, *extra]


def _concepts(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "c.txt"
    path.write_text("\n".join(CONCEPTS[:n]) + "\n")
    return path


def _album_ids(concepts: Path) -> list[str]:
    """The album ids the CLI will give these concepts (same preset and flags)."""
    from albumforge.config import RunConfig
    from ray_jobs.concepts import read_concepts

    cfg = RunConfig.load(preset="tiny", **{"plan.tracks_per_album": 2, "plan.track_seconds": 2.0})
    found, _ = read_concepts(concepts, cfg.plan_settings("offline"), cfg.seed)
    return [c.album_id for c in found]


def _config(tmp_path: Path, **faults) -> Path:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": faults}))
    return path


def _albums(out: Path) -> dict[str, dict]:
    return {a["album_id"]: a for a in read_latest(out, "albums").to_pylist()}


def _runs(out: Path) -> list[dict]:
    return sorted(read_latest(out, "runs").to_pylist(), key=lambda r: r["started_at"])


def _media_identity(out: Path) -> dict[str, tuple[str, str]]:
    """Per finished item's media file: (the record's maker, a hash of the decoded content).
    A regenerated item gets a new record (another worker and time); tagging, which rewrites
    the files on a copy (new inodes), changes neither the decoded audio nor the pixels."""
    import hashlib

    import soundfile as sf
    from PIL import Image

    ids = {}
    for rec_path in (out / "items").rglob("*.json"):
        rec = json.loads(rec_path.read_text())
        for rel in rec["paths"].split("|"):
            if rel.endswith(".png"):
                data = Image.open(out / rel).tobytes()
            else:
                data = sf.read(out / rel, dtype="float32")[0].tobytes()
            ids[rel] = (rec["worker"], hashlib.sha256(data).hexdigest())
    return ids


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the awaited moment")
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _records(out: Path) -> int:
    return len(list((out / "items").rglob("*.json"))) if (out / "items").exists() else 0


def _injected(fault: str) -> dict:
    """The environment of a run whose Ray workers get ``fault`` (tests/fault_inject)."""
    return _env(PYTHONPATH=str(REPO / "tests" / "fault_inject"), ALBUMFORGE_TEST_FAULT=fault)


def _crash_run(tmp_path: Path, n: int, victim: int, mode: str, track: int, tiny_cache: Path, *extra: str):
    """Run ``n`` concepts whose album number ``victim``'s track ``track`` kills its worker
    (``mode``: once | always); returns (victim album id, markers folder, result, out)."""
    concepts = _concepts(tmp_path, n)
    aid = _album_ids(concepts)[victim]
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    result = subprocess.run(_cmd(concepts, out, tiny_cache, *extra), env=_injected(f"{mode}:{aid}:{track}:{markers}"),
                            capture_output=True, text=True, timeout=400)
    return aid, markers, result, out


# ---------------------------------------------------------------- native crashes
def test_item_that_kills_its_worker_every_time_fails_alone_in_bounded_time(tiny_cache, tmp_path):
    t0 = time.time()
    poisoned, markers, result, out = _crash_run(tmp_path, 3, 1, "always", 2, tiny_cache,
                                                "--config", str(_config(tmp_path, max_deaths=2)))
    given_up_after = time.time() - t0
    assert result.returncode == 1, result.stderr[-3000:]
    albums = _albums(out)
    assert len(albums) == 3
    bad = albums.pop(poisoned)
    assert bad["status"] == "failed"
    assert "track 2" in bad["error"] and "MusicActor process died 2 times" in bad["error"]
    assert "Segmentation fault" in bad["error"], bad["error"]
    assert {a["status"] for a in albums.values()} == {"ok"}  # its batch-mates were isolated
    tracks = [t for t in read_latest(out, "tracks").to_pylist() if t["album_id"] == poisoned]
    assert {t["track_no"]: t["status"] for t in tracks} == {1: "ok", 2: "failed"}
    assert len(list(markers.iterdir())) == 2  # exactly max_deaths crashes, then no more attempts
    assert _runs(out)[-1]["status"] == "failed"
    print(f"\nFIGURE poisoned item given up after {given_up_after:.1f} s (whole run, max_deaths=2)")


def test_actor_killed_once_finishes_every_album(tiny_cache, tmp_path):
    _, markers, result, out = _crash_run(tmp_path, 2, 0, "once", 1, tiny_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(markers.iterdir())) == 1  # it did die once
    assert {a["status"] for a in _albums(out).values()} == {"ok"}
    journals = list((out / ".albumforge" / "journal").rglob("MusicActor-*.json"))
    deaths = [json.loads(p.read_text())["deaths"] for p in journals]
    assert any(d and max(d.values()) == 1 for d in deaths), deaths


# ---------------------------------------------------------------- actors that die as they start (issue 19)
def _startup_run(tmp_path: Path, n: int, fault: str, tiny_cache: Path, *extra: str):
    """Run ``n`` concepts with ``fault`` (tests/fault_inject: ``<mode>:<module>:<name>``) in the
    Ray workers; returns (result, seconds, out, markers folder)."""
    concepts = _concepts(tmp_path, n)
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    t0 = time.time()
    result = subprocess.run(_cmd(concepts, out, tiny_cache, *extra), env=_injected(f"{fault}:{markers}"),
                            capture_output=True, text=True, timeout=400)
    return result, time.time() - t0, out, markers


def test_music_actor_killed_at_every_start_ends_the_run_named(tiny_cache, tmp_path):
    # SIGKILLed as the actor starts to construct: before it can write a journal or read a mark
    result, seconds, out, markers = _startup_run(tmp_path, 2, "start-always:actors.music:MusicActor", tiny_cache)
    assert result.returncode == 1, result.stderr[-3000:]
    albums = _albums(out)
    assert len(albums) == 2 and {a["status"] for a in albums.values()} == {"failed"}
    for a in albums.values():
        assert "MusicActor died 3 times while loading" in a["error"], a["error"]
    run = _runs(out)[-1]
    assert run["status"] == "failed" and "MusicActor died 3 times while loading" in run["error"]
    assert "MusicActor died" in result.stderr  # the closing summary names it
    deaths = len(list(markers.iterdir()))
    assert 3 <= deaths <= 12, deaths  # bounded: the stage stops, then the run
    print(f"\nFIGURE MusicActor killed at every start: run ended after {seconds:.1f} s, {deaths} deaths "
          "(max_load_deaths=3)")


def test_image_actor_dying_at_every_load_keeps_the_tracks_and_the_rerun_makes_only_covers(tiny_cache, tmp_path):
    result, seconds, out, markers = _startup_run(tmp_path, 2, "load-always:actors.image:load_image", tiny_cache)
    assert result.returncode == 1, result.stderr[-3000:]
    albums = _albums(out)
    assert len(albums) == 2 and {a["status"] for a in albums.values()} == {"failed"}
    for a in albums.values():
        assert "ImageActor" in a["error"] and "loading" in a["error"], a["error"]
        assert "Segmentation fault" in a["error"], a["error"]  # the cause, from the fault report
    tracks = read_latest(out, "tracks").to_pylist()
    assert len(tracks) == 4 and {t["status"] for t in tracks} == {"ok"}  # the other stage finished its work
    assert _runs(out)[-1]["status"] == "failed" and "ImageActor" in _runs(out)[-1]["error"]
    assert len(list(markers.iterdir())) <= 6  # bounded
    before = _media_identity(out)
    assert before and all(rel.endswith(".ogg") for rel in before)
    rerun = subprocess.run(_cmd(_concepts(tmp_path, 2), out, tiny_cache), env=_env(), capture_output=True,
                           text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {a["status"] for a in _albums(out).values()} == {"ok"}
    after = _media_identity(out)
    assert [rel for rel, ident in before.items() if after.get(rel) != ident] == []  # no track made again
    assert sorted(rel for rel in after if rel not in before) == sorted(
        f"media/{aid}/cover.png" for aid in albums)  # the re-run made only the covers
    print(f"\nFIGURE ImageActor dying at every load: run ended after {seconds:.1f} s, tracks kept")


def test_load_that_raises_is_named_at_once(tiny_cache, tmp_path):
    result, _, out, markers = _startup_run(tmp_path, 1, "load-raise:actors.image:load_image", tiny_cache)
    assert result.returncode == 1, result.stderr[-3000:]
    (album,) = _albums(out).values()
    assert "ImageActor could not load" in album["error"] and "RuntimeError: injected load failure" in album["error"]
    assert {t["status"] for t in read_latest(out, "tracks").to_pylist()} == {"ok"}
    assert not list(markers.iterdir())  # no process died: no restart was needed to name it


def test_stage_that_dies_once_at_start_then_loads_finishes(tiny_cache, tmp_path):
    result, _, out, markers = _startup_run(tmp_path, 2, "load-once:actors.music:load_music", tiny_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(markers.iterdir())) == 1  # it did die once, while loading
    assert {a["status"] for a in _albums(out).values()} == {"ok"} and len(_albums(out)) == 2


# ---------------------------------------------------------------- signals, resume, one run per OUT
@pytest.mark.parametrize("sig, after", [(signal.SIGINT, "record"), (signal.SIGTERM, "album")])
def test_stopped_run_keeps_finished_work_and_the_rerun_redoes_none(tiny_cache, tmp_path, sig, after):
    concepts = _concepts(tmp_path, 6)
    out = tmp_path / "out"
    cmd = _cmd(concepts, out, tiny_cache, "--music-batch", "2")
    slow = _injected("slow:*:2:-")
    proc = subprocess.Popen(cmd, env=slow, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # "album": the items of a whole album are done (2 tracks and a cover; its row may still be buffered)
        moment = (lambda: _records(out) >= (1 if after == "record" else 3))
        _wait_for(moment, 300, proc)
        # one run per OUT: a second run on it is refused at once, naming the holder
        t0 = time.time()
        second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by run" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert time.time() - t0 < 60
        os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C does: the driver and the Ray it started
        t_sig = time.time()
        _, stderr = proc.communicate(timeout=120)
        stop_s = time.time() - t_sig
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr
    run = _runs(out)[-1]
    assert run["status"] == "interrupted" and signal.Signals(sig).name in run["error"]
    assert not (out / ".albumforge" / "hold.json").exists()
    before = _media_identity(out)
    assert before, "something was finished before the signal"
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    after_ids = _media_identity(out)
    redone = [rel for rel, ident in before.items() if after_ids.get(rel) != ident]
    assert redone == [], f"re-run regenerated {redone}"
    assert len(_albums(out)) == 6 and {a["status"] for a in _albums(out).values()} == {"ok"}
    tracks = read_latest(out, "tracks").to_pylist()
    assert len({(t["album_id"], t["track_no"]) for t in tracks}) == len(tracks) == 12
    print(f"\nFIGURE {signal.Signals(sig).name} after first {after}: exit in {stop_s:.1f} s; "
          f"{len(before)} finished media files kept, 0 regenerated")


def test_out_that_is_a_file_is_a_named_error(tmp_path):
    from ray_jobs.cli import main

    concepts = _concepts(tmp_path, 1)
    not_a_dir = tmp_path / "out.txt"
    not_a_dir.write_text("x")
    assert main(["generate", str(concepts), "--out", str(not_a_dir)]) == 2


# ---------------------------------------------------------------- a full disk
@pytest.fixture()
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode == 0
    if not ok:
        if require_services():
            pytest.fail("cannot mount a small tmpfs for the full-disk test (CI requires it)")
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_fails_named_and_the_rerun_completes(tiny_cache, tmp_path, small_disk):
    concepts = _concepts(tmp_path, 6)
    out = small_disk / "out"
    cmd = _cmd(concepts, out, tiny_cache, "--music-batch", "2")
    slow = _injected("slow:*:2:-")
    proc = subprocess.Popen(cmd, env=slow, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    filler = small_disk / "filler"
    try:
        _wait_for(lambda: _records(out) >= 1, 300, proc)
        with open(filler, "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-3000:]
    assert "No space left on device" in stderr and "Traceback" not in stderr
    assert not [p for p in out.rglob(".tmp-*")], "temp files left behind"
    before = _media_identity(out)
    filler.unlink()
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {a["status"] for a in _albums(out).values()} == {"ok"} and len(_albums(out)) == 6
    after_ids = _media_identity(out)
    assert [rel for rel, ident in before.items() if after_ids.get(rel) != ident] == []


# ---------------------------------------------------------------- a lost node
def test_lost_gpu_node_ends_the_run_named_and_a_rerun_completes(tiny_cache, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=3, num_gpus=2)
        cluster.wait_for_nodes()
        concepts = _concepts(tmp_path, 6)
        out = tmp_path / "out"
        cmd = _cmd(concepts, out, tiny_cache, "--config", str(_config(tmp_path, placement_timeout_s=5)),
                   address=cluster.address)
        slow = _injected("slow:*:2:-")
        proc = subprocess.Popen(cmd, env=slow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: _records(out) >= 1, 300, proc)
            cluster.remove_node(worker)
            t0 = time.time()
            _, stderr = proc.communicate(timeout=240)
            ended_after = time.time() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1, stderr[-3000:]
        run = _runs(out)[-1]
        assert run["status"] == "failed" and "no node can hold a" in run["error"] and "pending for" in run["error"]
        failed = [a for a in _albums(out).values() if a["status"] == "failed"]
        assert failed and all("no node can hold a" in a["error"] for a in failed)
        cluster.add_node(num_cpus=3, num_gpus=2)
        cluster.wait_for_nodes()
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        assert {a["status"] for a in _albums(out).values()} == {"ok"} and len(_albums(out)) == 6
        print(f"\nFIGURE lost node: run ended {ended_after:.1f} s after the node was removed (timeout 5 s)")
    finally:
        cluster.shutdown()
