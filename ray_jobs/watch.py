"""Keeping a streaming run honest: it ends, by itself or on a signal, and says why.

- ``drain``: rows flow from the Ray Data stream (pulled in a thread) to the driver's
  callback; between rows the driver asks ``stop()`` whether to end early, so a signal, a
  stage that cannot be placed or a full disk ends the run within a second or two.
- ``PlacementWatch``: a stage that no live node could hold even when idle (its GPU node
  was lost and none replaced it) for ``timeout_s`` is a reason to stop, named.
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
