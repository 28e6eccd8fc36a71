"""Keeping a streaming run honest: it ends, by itself or on a signal, and says why.

- ``drain``: rows flow from the Ray Data stream (pulled in a thread) to the driver's
  callback; between rows the driver asks ``stop()`` whether to end early, so a signal, a
  stage that cannot be placed or a full disk ends the run within a second or two.
- ``PlacementWatch``: a stage that no live node could hold even when idle (its GPU node
  was lost and none replaced it) for ``timeout_s`` is a reason to stop, named.
- ``StartupWatch``: a stage whose actors keep dying while they load (``faults.max_load_deaths``
  times with no actor of it ready in between) is marked broken: its next actors load
  nothing and fail their items naming the cause, so the other stages finish their work and
  the run ends; actors that keep dying even so (before they can read the mark) are a
  reason to stop.
- ``Interrupts``: the first SIGINT/SIGTERM asks the run to stop (finished work is kept);
  a second one exits at once.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("albumforge")


# ---------------------------------------------------------------- the stream
def drain(batches: Iterator[dict], on_row: Callable[[dict], None], stop: Callable[[], str | None],
          poll_s: float = 0.5) -> str | None:
    """Feed every row of ``batches`` to ``on_row`` until the stream ends (returns None) or
    ``stop()`` gives a reason (returned at once; the stream is left to its thread)."""
    q: queue.Queue = queue.Queue()
    halt = threading.Event()

    def pull() -> None:
        try:
            for batch in batches:
                q.put(("batch", batch))
                if halt.is_set():
                    return
            q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 (handed to the driver's thread)
            q.put(("error", e))

    threading.Thread(target=pull, name="albumforge-stream", daemon=True).start()
    try:
        while True:
            reason = stop()
            if reason:
                return reason
            try:
                kind, item = q.get(timeout=poll_s)
            except queue.Empty:
                continue
            if kind == "end":
                return None
            if kind == "error":
                first = str(item).strip().splitlines()[0] if str(item).strip() else ""
                return f"the pipeline stopped: {type(item).__name__}: {first}"[:500]
            keys = list(item)
            for k in range(len(item[keys[0]]) if keys else 0):
                on_row({key: _py(item[key][k]) for key in keys})
    finally:
        halt.set()


def _py(value):
    """numpy scalars -> Python values (for manifest rows)."""
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------- placement
@dataclass(frozen=True)
class StageAsk:
    """What one actor of a stage asks of a node."""

    name: str
    num_gpus: float
    num_cpus: float


def unplaceable(asks: list[StageAsk], nodes: list[dict]) -> list[str]:
    """The stages no live node could hold even when idle (``nodes``: ``ray.nodes()``)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    return [f"no node can hold a {a.name}: {a.num_gpus:g} GPU, {a.num_cpus:g} CPU"
            for a in asks
            if not any(r.get("GPU", 0) >= a.num_gpus and r.get("CPU", 0) >= a.num_cpus for r in alive)]


class PlacementWatch:
    """A reason to stop when some stage has been unplaceable for ``timeout_s``."""

    def __init__(self, asks: list[StageAsk], timeout_s: float, nodes: Callable[[], list[dict]] | None = None,
                 every_s: float = 2.0):
        self.asks, self.timeout_s, self.every_s = asks, timeout_s, every_s
        self.nodes = nodes
        self.since: float | None = None
        self.last: float = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            return self._verdict(now, None)
        self.last = now
        if self.nodes is None:
            import ray

            self.nodes = ray.nodes
        missing = unplaceable(self.asks, self.nodes())
        if not missing:
            if self.since is not None:
                log.info("every stage can be placed again")
            self.since = None
            return None
        if self.since is None:
            self.since = now
            log.warning("%s; waiting up to %.0f s for a node that can", "; ".join(missing), self.timeout_s)
        return self._verdict(now, missing)

    def _verdict(self, now: float, missing: list[str] | None) -> str | None:
        if self.since is None or now - self.since < self.timeout_s:
            return None
        missing = missing or unplaceable(self.asks, self.nodes())
        return f"{'; '.join(missing)}: pending for {now - self.since:.0f} s" if missing else None


# ---------------------------------------------------------------- actors that die as they start
@dataclass(frozen=True)
class StageLoad:
    """A stage whose start-up deaths are counted: its actor class and what its actors load."""

    name: str  # the callable class Ray Data runs: "MusicActor" (its workers: MapWorker(MapBatches(MusicActor)))
    loads: str  # for the message: "facebook/musicgen-small"


# deaths that are not a crash: Ray Data releasing an actor, the driver ending
_INTENDED = {"RAY_KILL", "OUT_OF_SCOPE", "REF_DELETED", "OWNER_DIED"}


def _gcs_actors() -> dict[str, dict]:
    """This job's actors as the GCS has them (state, restarts, node), with no dashboard needed."""
    import ray
    from ray._private import state

    return state.actors(job_id=ray.get_runtime_context().job_id)


def _crashed(info: dict) -> bool:
    """A DEAD actor that crashed (not one Ray Data or the driver let go)."""
    cause = info.get("DeathCause")
    if cause is None:
        return False
    if any(cause.HasField(f) for f in ("creation_task_failure_context", "runtime_env_failed_context", "oom_context")):
        return True
    if cause.HasField("actor_died_error_context"):
        ctx = cause.actor_died_error_context
        return ctx.DESCRIPTOR.fields_by_name["reason"].enum_type.values_by_number[ctx.reason].name not in _INTENDED
    return False


class StartupWatch:
    """Counts each stage's start-up deaths (from the GCS: a process killed before it could write
    anything is counted too) and marks a stage broken when it keeps dying while loading.

    An actor's death is a start-up death when the actor was not ready (``ALIVE``: its
    constructor, which loads the model, had not returned) at the last look; a stage's count
    goes back to 0 whenever one of its actors is ready. At ``max_load_deaths`` the stage is
    marked broken (``actors.faults.mark_broken``, naming the model, the node and the cause
    from the last fault report): its actors then start without loading and fail every item
    they are given with that cause, so the run finishes what the other stages can and ends.
    A broken stage whose actors die ``max_load_deaths`` times more (dying before they can
    read the mark) is a reason to stop the run. ``broken`` holds each marked stage's cause.
    """

    def __init__(self, stages: list[StageLoad], max_load_deaths: int, out, run_id: str,
                 actors: Callable[[], dict[str, dict]] | None = None, every_s: float = 2.0):
        self.stages = {s.name: s for s in stages}
        self.limit, self.out, self.run_id, self.every_s = max(1, int(max_load_deaths)), out, run_id, every_s
        self.actors = actors or _gcs_actors
        self.seen: dict[str, tuple[int, bool]] = {}  # actor id -> (deaths counted, ready at the last look)
        self.deaths = dict.fromkeys(self.stages, 0)  # start-up deaths since the stage last had a ready actor
        self.broken: dict[str, str] = {}  # stage -> the cause it was marked broken with
        self.after = dict.fromkeys(self.stages, 0)  # start-up deaths since it was marked
        self.reason: str | None = None
        self.last, self.failing = 0.0, False

    def _stage(self, class_name: str) -> str | None:
        for name in self.stages:
            if f"MapBatches({name})" in class_name:
                return name
        return None

    def __call__(self) -> str | None:
        now = time.monotonic()
        if self.reason or now - self.last < self.every_s:
            return self.reason
        self.last = now
        try:
            table = self.actors()
        except Exception as e:  # noqa: BLE001 (an unreachable GCS is the PlacementWatch's and Ray's to name)
            if not self.failing:
                log.warning("cannot read the actor table (%s): start-up deaths are not counted", e)
            self.failing = True
            return None
        self.failing = False
        died: dict[str, list[tuple[str, dict]]] = {name: [] for name in self.stages}
        ready: set[str] = set()
        for actor_id, info in table.items():
            stage = self._stage(str(info.get("ActorClassName", "")))
            if stage is None:
                continue
            state = info.get("State")
            deaths = int(info.get("NumRestarts") or 0) + (state == "DEAD" and _crashed(info))
            counted, was_ready = self.seen.get(actor_id, (0, False))
            new = deaths - counted - (1 if was_ready and deaths > counted else 0)  # the first: a working death
            self.seen[actor_id] = (deaths, state == "ALIVE")
            died[stage] += [(actor_id, info)] * max(0, new)
            if state == "ALIVE":
                ready.add(stage)
        for name, deaths in died.items():
            self._count(name, deaths, name in ready)
        return self.reason

    def _count(self, name: str, deaths: list[tuple[str, dict]], ready: bool) -> None:
        if name in self.broken:
            self.after[name] += len(deaths)
            if self.after[name] >= self.limit and self.reason is None:
                self.reason = (f"{self.broken[name]}; its actors kept dying before they could stop loading "
                               f"({self.after[name]} more deaths)")
            return
        if ready:  # a ready actor: the stage works (deaths before it are history)
            self.deaths[name] = 0
            return
        self.deaths[name] += len(deaths)
        if deaths and self.deaths[name] >= self.limit:
            self._mark(name, *deaths[-1])

    def _mark(self, name: str, actor_id: str, info: dict) -> None:
        from actors.faults import NO_REPORT, last_fault, mark_broken

        node = (info.get("Address") or {}).get("IPAddress") or "an unknown node"
        cause = last_fault(self.out, self.run_id, name, actor_id) or NO_REPORT
        why = (f"{name} died {self.deaths[name]} times while loading {self.stages[name].loads} "
               f"(on node {node}): {cause}")
        self.broken[name] = why
        log.error("stopping the %s stage: %s; every item left to it fails, the other stages go on", name, why)
        try:
            mark_broken(self.out, self.run_id, name, why)
        except OSError as e:  # its actors cannot be told: the run ends instead
            self.reason = f"{why} (the stop could not be written: {e})"


# ---------------------------------------------------------------- signals
class Interrupts:
    """SIGINT/SIGTERM while a run streams: the first asks it to stop, the second exits."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def reason(self) -> str | None:
        return None if self.signum is None else f"interrupted by {signal.Signals(self.signum).name}"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: no more waiting
            os._exit(128 + signum)
        self.signum = signum
        print(f"\nalbumforge: {signal.Signals(signum).name}: stopping; finished work is kept "
              "(a second Ctrl-C quits at once)", file=sys.stderr, flush=True)

    def install(self) -> None:
        """Take SIGINT and SIGTERM (main thread only); the handlers found first are restored on exit."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old = signal.signal(sig, self._handle)
                self._old.setdefault(sig, old)

    def __enter__(self) -> "Interrupts":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
