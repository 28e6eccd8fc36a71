"""Bounded failure inside an actor: exceptions isolate items, native crashes are counted.

Ray restarts a dead actor and resubmits its task (Ray Data's default: without limit), so a
deterministic native crash (a segfault on one input) would loop forever, and a Ray-level
limit alone would leave a stage with no actor and the run waiting. Instead every death is
counted against what the process was doing, in a journal that outlives it:

- the actor writes what it is about to do (load its model, or one group of items) to its
  journal, one JSON file per actor under ``OUT/.albumforge/journal/<run_id>/`` (Ray keeps
  the actor id across restarts; the file lives on OUT, so a restart on another node finds
  it; on object storage it is one small object, rewritten whole);
- a restarted actor reads it: whatever was in flight gets one death more, and the cause is
  taken from the report ``faulthandler`` wrote when the process died ("Segmentation fault"
  and the innermost frame); no report means a kill (SIGKILL, out of memory, a lost node).
  The report needs a real file: beside the journal for a local OUT; on the node's temp
  folder for object storage (a restart on another node then names no cause, only counts);
- items with a death run one at a time (their batch-mates are isolated, as for Python
  exceptions); an item that has died ``max_deaths`` times fails without running again, its
  error naming the cause; a model load that died ``max_deaths`` times fails every item the
  actor is given.
- a model load is counted for its whole *stage* too: deaths before an actor is ready are
  watched by the driver (``ray_jobs.watch.StartupWatch``, from the GCS: a process killed
  before it wrote anything is counted there), which marks a stage whose actors keep dying
  while loading as broken (``mark_broken``); an actor of that stage that starts then loads
  nothing and fails every item with the mark's cause, and a load that raises is that
  actor's cause at once (``GuardedStage._load``), with no restart.

Every retry therefore either finishes its batch or adds a death to a bounded count, so a
batch always ends. Items already recorded as finished (``albumforge.records``) are filled
from their record instead of being made again.

The guard also times the model calls (``with self._on_gpu():``) and notes them on each
row of the group in the ``busy`` column: this actor, its node and GPU ids, when it
started and finished loading, the group's call spans and (on CUDA) the peak GPU memory.
The driver adds them up per actor and per card (``albumforge.busy``).
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from albumforge.records import read_record, write_record
from albumforge.rows import STATUS_FAILED, STATUS_OK
from albumforge.storage import Store, as_store

log = logging.getLogger("albumforge.faults")
T = TypeVar("T")

JOURNAL_DIR = ".albumforge/journal"
INIT = "init"  # the journal key of a model load
NO_REPORT = "no fault report: killed by a signal such as SIGKILL (out of memory?), or its node was lost"


def _actor_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            actor = ray.get_runtime_context().get_actor_id()
            if actor:
                return actor
    except Exception:  # outside Ray (tests and reroll call actors directly)
        pass
    return f"local-{os.getpid()}"


def item_key(row: dict) -> str:
    return f"{row['album_id']}/{row['kind']}/{int(row['item_no'])}/{int(row['seed'])}"


def parse_fault(text: str, last: bool = False) -> str | None:
    """"Segmentation fault in soundfile.py:1234 (write)" from a faulthandler report (the
    first in ``text``, or the ``last``)."""
    found = list(re.finditer(r"Fatal Python error: ([^\n]+)", text))
    if not found:
        return None
    m = found[-1] if last else found[0]
    frame = re.search(r'File "([^"]+)", line (\d+) in (\S+)', text[m.end():])
    where = f" in {Path(frame[1]).name}:{frame[2]} ({frame[3]})" if frame else ""
    return m[1].strip() + where


def fault_folder(store: Store, run_id: str) -> Path:
    """Where the ``faulthandler`` reports of a run's actors go: beside the journal for a
    local OUT, else this node's own temp folder (faulthandler writes into an open file)."""
    if store.local:
        return store.local_path(f"{JOURNAL_DIR}/{run_id}")
    return (Path(tempfile.gettempdir()) / "albumforge-faults"
            / hashlib.sha256(store.url.encode()).hexdigest()[:16] / run_id)


def last_fault(out: Store | str | Path, run_id: str, actor: str, actor_id: str) -> str | None:
    """The cause of the last native crash of one actor (``actor``: its stage name, ``actor_id``:
    Ray's id), from its fault report when this node can read it; None: no report (a kill)."""
    try:
        text = (fault_folder(as_store(out), run_id) / f"{actor}-{actor_id}.fault").read_text(errors="replace")
    except OSError:
        return None
    return parse_fault(text, last=True)


def broken_rel(run_id: str, stage: str) -> str:
    return f"{JOURNAL_DIR}/{run_id}/{stage}.broken"


def mark_broken(out: Store | str | Path, run_id: str, stage: str, cause: str) -> None:
    """Say that a stage's actors cannot load (written by the driver): its next actors fail
    their items with ``cause`` instead of loading again."""
    as_store(out).write_text(broken_rel(run_id, stage), cause)


def read_broken(out: Store | str | Path, run_id: str | None, stage: str) -> str | None:
    """The cause a run marked ``stage`` broken with, or None."""
    if not run_id:
        return None
    try:
        return as_store(out).read_bytes(broken_rel(run_id, stage)).decode("utf-8", "replace") or None
    except OSError:
        return None


class CrashJournal:
    """What one actor was doing, kept across its restarts."""

    def __init__(self, out: Store | str | Path, run_id: str, actor: str, max_deaths: int):
        self.actor, self.max_deaths = actor, max(1, int(max_deaths))
        self.store = store = as_store(out)
        name = f"{actor}-{_actor_id()}"
        self.rel = f"{JOURNAL_DIR}/{run_id}/{name}.json"
        folder = fault_folder(store, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        self.fault_path = folder / f"{name}.fault"
        try:
            state = json.loads(store.read_bytes(self.rel))
        except (OSError, ValueError):
            state = {"doing": None, "deaths": {}, "causes": {}, "fault_at": 0}
        if state["doing"]:  # the previous process died doing this
            cause = self._fault_since(state["fault_at"]) or NO_REPORT
            for key in state["doing"]:
                state["deaths"][key] = state["deaths"].get(key, 0) + 1
                state["causes"][key] = cause
        state["doing"] = None
        state["fault_at"] = self.fault_path.stat().st_size if self.fault_path.exists() else 0
        self.state = state
        self._fault_file = open(self.fault_path, "a")  # noqa: SIM115 (open for the process's life)
        faulthandler.enable(file=self._fault_file, all_threads=True)
        self._save()

    def _fault_since(self, offset: int) -> str | None:
        try:
            with open(self.fault_path, errors="replace") as f:
                f.seek(offset)
                return parse_fault(f.read())
        except OSError:
            return None

    def _save(self) -> None:
        """Best effort: a journal that cannot be written (a full disk) must not fail the batch;
        the items then fail on their own writes, named."""
        try:
            self.store.write_text(self.rel, json.dumps(self.state))
        except OSError as e:
            if not getattr(self, "_warned", False):
                self._warned = True
                log.warning("crash journal not saved (%s): a death now would not be counted", e)

    @contextmanager
    def doing(self, keys: list[str]):
        """Mark ``keys`` in flight while the block runs (a death inside counts against them)."""
        self.state["doing"] = list(keys)
        self._save()
        try:
            yield
        finally:
            self.state["doing"] = None
            self._save()

    def deaths(self, key: str) -> int:
        return int(self.state["deaths"].get(key, 0))

    def exhausted(self, key: str) -> bool:
        return self.deaths(key) >= self.max_deaths

    def message(self, key: str, what: str) -> str:
        return (f"the {self.actor} process died {self.deaths(key)} times {what}: "
                f"{self.state['causes'].get(key) or NO_REPORT}")


def load_guarded(out: Store | str | Path, run_id: str | None, stage: str, what: str, load: Callable[[], T],
                 journal: CrashJournal | None = None) -> tuple[T | None, str | None]:
    """(``load()``, None), or (None, why this actor of ``stage`` cannot load ``what``): the
    run marked the stage broken (``mark_broken``), the load killed this process
    ``max_deaths`` times (``journal``), or it raised (named at once: a missing file or a bad
    config does not get better on a restart, so no restart is asked for)."""
    try:
        broken = read_broken(out, run_id, stage)
        if broken:
            return None, broken
        if journal is not None and journal.exhausted(INIT):
            return None, journal.message(INIT, f"loading {what}")
        if journal is None:
            return load(), None
        with journal.doing([INIT]):
            return load(), None
    except Exception as e:  # noqa: BLE001 (every item of this actor fails with it, named)
        why = f"{stage} could not load {what}: {type(e).__name__}: {e}"[:2000]
        log.error("%s", why)
        return None, why


def peak_gpu_bytes() -> int | None:
    """Peak GPU memory torch allocated in this process (None: no CUDA, or torch not loaded)."""
    torch = sys.modules.get("torch")  # never imported here: only where a model needs it
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
    except Exception:
        pass
    return None


class GuardedStage:
    """Base of the GPU actors: the guard around ``_render(batch, idx)``.

    A subclass calls ``_start_guard`` first in ``__init__`` and loads its model through
    ``self._load(what, load)``; its ``__call__`` passes its own rows to ``_process``.
    ``_render`` fills the result columns of the rows ``idx`` (and raises when the whole
    group failed); a row whose result is "ok" gets its item record.
    """

    actor_name = "Actor"
    journal: CrashJournal | None = None
    broken: str | None = None  # why this actor cannot work (its model load kept dying)

    def _start_guard(self, out: Store | str, run_id: str | None, max_deaths: int) -> None:
        """``out``: OUT as a Store or its URL/path (actors get the URL: no credentials travel)."""
        self.started, self.ready = time.time(), None  # this process's start; its model loaded
        self.actor_key, self.spans, self.groups = f"{self.actor_name}:{_actor_id()}", [], 0
        self.out, self.run_id = as_store(out), run_id
        self.journal = CrashJournal(self.out, run_id, self.actor_name, max_deaths) if run_id else None

    def _load(self, what: str, load: Callable[[], T]) -> T | None:
        """``load()`` once, guarded (``load_guarded``); None when this actor cannot load
        ``what``: ``self.broken`` says why, and every item it is given fails with that."""
        try:
            model, self.broken = load_guarded(self.out, self.run_id, self.actor_name, what, load, self.journal)
            return model
        finally:
            self.ready = time.time()

    @contextmanager
    def _on_gpu(self):
        """Time one model call: the span counts as this actor's busy time."""
        t0 = time.time()
        try:
            yield
        finally:
            self.spans.append((t0, time.time()))

    def _note_busy(self, batch, group: list[int], work: tuple[float, float]) -> None:
        """The ``busy`` column of the group's rows: who made them, the group's model calls and
        its whole ``work`` span (model calls plus mastering, encoding, writing)."""
        if "busy" not in batch:
            return
        worker = getattr(self, "worker", None) or {}
        note = json.dumps({
            "actor": self.actor_key, "kind": self.actor_name, "node": worker.get("node"),
            "gpu_ids": worker.get("gpu_ids") or [], "started": self.started, "ready": self.ready,
            "group": self.groups, "spans": [[round(a, 4), round(b, 4)] for a, b in self.spans],
            "work": [round(work[0], 4), round(work[1], 4)],
            "peak_gpu_bytes": peak_gpu_bytes(),
        })
        for i in group:
            batch["busy"][i] = note

    def _process(self, batch: dict, todo: list[int], group_size: int, render: Callable) -> None:
        # 1. finished earlier (a record whose files exist): filled from it, not made again
        todo = [i for i in todo if not self._from_record(batch, i)]
        # 2. what cannot run: a model that never loaded, items that killed the process too often
        j = self.journal
        for i in list(todo):
            key = self._key(batch, i)
            if self.broken or (j is not None and j.exhausted(key)):
                self._fail(batch, i, self.broken or j.message(key, "generating this item") +
                           " (its batch-mates were retried alone)")
                todo.remove(i)
        # 3. the rest in groups; an item that ever died runs alone; a group that raises is
        #    retried one item at a time, so one bad item never fails its batch-mates
        suspect = j is not None and any(j.deaths(self._key(batch, i)) for i in todo)
        groups = [[i] for i in todo] if suspect else [todo[k:k + group_size] for k in range(0, len(todo), group_size)]
        for group in groups:
            try:
                self._guarded(batch, group, render)
            except Exception as e:
                if len(group) == 1:
                    self._fail(batch, group[0], f"{type(e).__name__}: {e}")
                    continue
                for i in group:
                    try:
                        self._guarded(batch, [i], render)
                    except Exception as e1:  # the row records the error; the batch goes on
                        self._fail(batch, i, f"{type(e1).__name__}: {e1}")

    def _key(self, batch, i) -> str:
        return item_key({c: batch[c][i] for c in ("album_id", "kind", "item_no", "seed")})

    def _guarded(self, batch, group: list[int], render: Callable) -> None:
        keys = [self._key(batch, i) for i in group]
        self.spans, self.groups, t0 = [], self.groups + 1, time.time()
        try:
            if self.journal is None:
                render(batch, group)
            else:
                with self.journal.doing(keys):
                    render(batch, group)
        finally:
            self._note_busy(batch, group, (t0, time.time()))
        for i in group:
            if batch["status"][i] == STATUS_OK:
                self._record(batch, i)

    def _record(self, batch, i) -> None:
        row = {c: batch[c][i] for c in batch}
        try:
            write_record(self.out, row, self.run_id)
        except OSError as e:  # a WriteError naming the record's path and the cause
            self._fail(batch, i, f"item record: {e}")

    def _from_record(self, batch, i) -> bool:
        rec = read_record(self.out, str(batch["album_id"][i]), str(batch["kind"][i]), int(batch["item_no"][i]),
                          int(batch["seed"][i]))
        if rec is None:
            return False
        for col in batch:
            if col in rec and col not in ("album_id", "kind", "item_no", "seed", "reroll", "busy") and \
                    rec[col] is not None:  # busy: this run did not make it
                batch[col][i] = rec[col]
        return True

    @staticmethod
    def _fail(batch, i, error: str) -> None:
        batch["status"][i] = STATUS_FAILED
        batch["error"][i] = error[:2000]
