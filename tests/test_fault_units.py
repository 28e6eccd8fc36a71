"""Fast unit tests of the failure machinery (no Ray): the OUT hold, the crash journal, the
placement verdict, start-up deaths per stage, item records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from actors.faults import NO_REPORT, CrashJournal, load_guarded, mark_broken, parse_fault, read_broken
from albumforge.records import album_records, read_record, write_record
from albumforge.outlock import HOLD, OutHeld, OutLock
from ray_jobs.watch import PlacementWatch, StageAsk, StageLoad, StartupWatch, unplaceable


# ---------------------------------------------------------------- one run per OUT
def test_second_hold_is_refused_naming_the_holder(tmp_path):
    with OutLock(tmp_path, "run-a"):
        with pytest.raises(OutHeld) as e:
            OutLock(tmp_path, "run-b").acquire()
        assert "run-a" in str(e.value) and f"pid {os.getpid()}" in str(e.value)
    assert not (tmp_path / HOLD).exists()  # let go at the end
    with OutLock(tmp_path, "run-b"):  # and free for the next run
        pass


def test_hold_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = OutLock(tmp_path, "run-dead")
    stale.info["pid"] = int(dead.stdout)
    stale.path.parent.mkdir(parents=True)
    stale.path.write_text(json.dumps(stale.info))
    lock = OutLock(tmp_path, "run-new").acquire()
    try:
        assert lock.took_over["run_id"] == "run-dead"
        assert json.loads((tmp_path / HOLD).read_text())["run_id"] == "run-new"
    finally:
        lock.release()


def test_silent_hold_from_another_host_is_taken_over_only_when_stale(tmp_path):
    (tmp_path / HOLD).parent.mkdir(parents=True)
    (tmp_path / HOLD).write_text(json.dumps({"run_id": "far", "host": "elsewhere", "pid": 1, "since": "x"}))
    with pytest.raises(OutHeld):
        OutLock(tmp_path, "run-new", stale_s=60).acquire()
    os.utime(tmp_path / HOLD, (0, 0))  # not refreshed for ages: its host is gone
    lock = OutLock(tmp_path, "run-new", stale_s=60).acquire()
    lock.release()
    assert lock.took_over["run_id"] == "far"


# ---------------------------------------------------------------- the crash journal
@pytest.fixture(autouse=True)
def _faulthandler_back_to_stderr():
    """A journal points faulthandler at its report file (right in an actor, not in pytest)."""
    yield
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)


def test_journal_counts_a_death_against_what_was_in_flight(tmp_path, monkeypatch):
    monkeypatch.setattr("actors.faults._actor_id", lambda: "actor1")
    first = CrashJournal(tmp_path, "run", "MusicActor", max_deaths=2)
    first.state["doing"] = ["a/track/1/5", "a/track/2/6"]
    first._save()  # the process dies here, with two items in flight
    with open(first.fault_path, "a") as f:
        f.write('Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n'
                '  File "/x/soundfile.py", line 1234 in write\n')
    second = CrashJournal(tmp_path, "run", "MusicActor", max_deaths=2)  # Ray restarted it
    assert second.deaths("a/track/1/5") == second.deaths("a/track/2/6") == 1
    assert not second.exhausted("a/track/1/5")
    assert "Segmentation fault in soundfile.py:1234 (write)" in second.message("a/track/1/5", "x")
    with second.doing(["a/track/2/6"]):
        pass  # finished: nothing counts
    third = CrashJournal(tmp_path, "run", "MusicActor", max_deaths=2)
    assert third.deaths("a/track/2/6") == 1
    third.state["doing"] = ["a/track/2/6"]
    third._save()  # dies again, this time with no fault report (a SIGKILL)
    fourth = CrashJournal(tmp_path, "run", "MusicActor", max_deaths=2)
    assert fourth.exhausted("a/track/2/6") and NO_REPORT in fourth.message("a/track/2/6", "x")


def test_parse_fault_without_a_report_is_none():
    assert parse_fault("") is None
    assert parse_fault("Fatal Python error: Aborted\n") == "Aborted"


# ---------------------------------------------------------------- placement
def test_unplaceable_names_the_stage_and_its_ask():
    asks = [StageAsk("MusicActor", 0.5, 1.0), StageAsk("ImageActor", 0.0, 1.0)]
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": False, "Resources": {"CPU": 4, "GPU": 2}}]
    assert unplaceable(asks, nodes) == ["no node can hold a MusicActor: 0.5 GPU, 1 CPU"]
    nodes[1]["Alive"] = True
    assert unplaceable(asks, nodes) == []


def test_placement_watch_waits_its_timeout_then_names_the_reason():
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}]
    watch = PlacementWatch([StageAsk("MusicActor", 0.5, 1.0)], timeout_s=0.2, nodes=lambda: nodes, every_s=0)
    assert watch() is None  # the clock starts
    import time

    time.sleep(0.25)
    reason = watch()
    assert reason.startswith("no node can hold a MusicActor: 0.5 GPU") and "pending for" in reason
    nodes[0]["Resources"]["GPU"] = 1.0  # a node joined: the clock resets
    assert watch() is None and watch.since is None


# ---------------------------------------------------------------- start-up deaths per stage
MUSIC = "MapWorker(MapBatches(MusicActor))"


class _Table:
    """A GCS actor table the test writes: actor id -> state and restarts."""

    def __init__(self):
        self.rows = {}

    def set(self, actor, state, restarts, cls=MUSIC):
        self.rows[actor] = {"ActorClassName": cls, "State": state, "NumRestarts": restarts,
                            "Address": {"IPAddress": "10.0.0.7"}}

    def __call__(self):
        return dict(self.rows)


def _watch(tmp_path, table, limit=3):
    stages = [StageLoad("MusicActor", "facebook/musicgen-small"), StageLoad("ImageActor", "sd15")]
    return StartupWatch(stages, limit, tmp_path, "run1", actors=table, every_s=0)


def test_startup_watch_marks_a_stage_that_never_loads_then_stops_if_it_keeps_dying(tmp_path):
    table = _Table()
    watch = _watch(tmp_path, table)
    table.set("a1", "PENDING_CREATION", 0)
    table.set("i1", "ALIVE", 0, cls="MapWorker(MapBatches(ImageActor))")
    assert watch() is None
    table.set("a1", "RESTARTING", 2)  # two deaths before it ever became ready
    assert watch() is None and not watch.broken
    # its fault report (written by faulthandler in the actor) names the cause
    fault = tmp_path / ".albumforge" / "journal" / "run1" / "MusicActor-a1.fault"
    fault.parent.mkdir(parents=True)
    fault.write_text('Fatal Python error: Segmentation fault\n\n  File "/x/loader.py", line 9 in load\n')
    table.set("a1", "RESTARTING", 3)
    assert watch() is None  # the stage stops; the run goes on with the others
    why = watch.broken["MusicActor"]
    assert why.startswith("MusicActor died 3 times while loading facebook/musicgen-small (on node 10.0.0.7)")
    assert "Segmentation fault in loader.py:9 (load)" in why
    assert read_broken(tmp_path, "run1", "MusicActor") == why  # its next actors are told
    assert "ImageActor" not in watch.broken
    table.set("a1", "ALIVE", 3)  # a ready actor of a broken stage does not undo the stop
    assert watch() is None and "MusicActor" in watch.broken
    table.set("a1", "RESTARTING", 7)  # ... but one that keeps dying (a working death, then 3 at start) ends the run
    reason = watch()
    assert reason and reason.startswith(why) and "kept dying" in reason


def test_startup_watch_counts_only_deaths_with_no_ready_actor_in_between(tmp_path):
    table = _Table()
    watch = _watch(tmp_path, table)
    table.set("a1", "ALIVE", 0)
    assert watch() is None
    table.set("a1", "RESTARTING", 1)  # a working actor died (its items count that): not a start-up death
    assert watch() is None and watch.deaths["MusicActor"] == 0
    table.set("a1", "RESTARTING", 3)  # two start-up deaths
    assert watch() is None and watch.deaths["MusicActor"] == 2
    table.set("a1", "ALIVE", 3)  # it loaded: the stage works again
    assert watch() is None and watch.deaths["MusicActor"] == 0
    table.set("a2", "DEAD", 0)  # Ray Data let an actor go before it was ready: not a crash
    table.rows["a2"]["DeathCause"] = None
    assert watch() is None and not watch.broken


def test_load_guarded_names_a_raising_load_and_a_broken_stage(tmp_path):
    def bad():
        raise FileNotFoundError("no unet/diffusion_pytorch_model.safetensors")

    model, why = load_guarded(tmp_path, "run1", "ImageActor", "sd15", bad)
    assert model is None and why.startswith("ImageActor could not load sd15: FileNotFoundError: no unet/")
    assert load_guarded(tmp_path, "run1", "ImageActor", "sd15", lambda: "pipe") == ("pipe", None)
    mark_broken(tmp_path, "run1", "ImageActor", "ImageActor died 3 times while loading sd15")
    loaded = []
    assert load_guarded(tmp_path, "run1", "ImageActor", "sd15", lambda: loaded.append(1)) == \
        (None, "ImageActor died 3 times while loading sd15")
    assert loaded == []  # a broken stage loads nothing more
    assert load_guarded(tmp_path, "run2", "ImageActor", "sd15", lambda: "pipe") == ("pipe", None)  # another run


# ---------------------------------------------------------------- item records
def test_record_counts_only_with_its_files_and_seed(tmp_path):
    media = tmp_path / "media" / "abc"
    media.mkdir(parents=True)
    (media / "track-01.ogg").write_bytes(b"x")
    row = {"album_id": "abc", "kind": "track", "item_no": 1, "seed": 7, "reroll": 0, "status": "ok",
           "path": "media/abc/track-01.ogg", "paths": "media/abc/track-01.ogg", "lufs": float("nan")}
    write_record(tmp_path, row, "run1")
    assert read_record(tmp_path, "abc", "track", 1, 7)["lufs"] is None  # NaN stored as null
    assert read_record(tmp_path, "abc", "track", 1, 8) is None  # another seed: not this item
    (media / "track-01.ogg").unlink()
    assert read_record(tmp_path, "abc", "track", 1, 7) is None and album_records(tmp_path, "abc") == []
    with pytest.raises(ValueError):
        write_record(tmp_path, {**row, "status": "failed"})
