"""One run per OUT: a hold file that names its holder and is kept fresh while it runs.

``OUT/.albumforge/hold.json`` is created exclusively (``O_EXCL``) and names the run id, host,
pid and start time; a thread touches it every ``stale_s / 4`` seconds. A second run on the
same OUT is refused at once with the holder's name. A hold whose holder is gone is taken
over: on the same host when its pid no longer runs, from anywhere when it has not been
refreshed for ``stale_s`` (a holder on another host that stopped without letting go).
The takeover renames the stale file to a unique name first, so of two runs taking over at
once only one wins. The hold is removed when the run ends, however it ends.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

HOLD = Path(".albumforge") / "hold.json"


class OutHeld(RuntimeError):
    """Another live run holds this OUT."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutLock:
    def __init__(self, out: Path, run_id: str, stale_s: float = 60.0):
        self.path = Path(out) / HOLD
        self.run_id, self.stale_s = run_id, float(stale_s)
        self.info = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None  # the stale hold this run replaced, if any

    # ------------------------------------------------------------ taking and keeping it
    def acquire(self) -> "OutLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                break
            holder = self._holder()
            if holder is None:  # vanished between our create and read: try again
                continue
            if not self._stale(holder):
                raise OutHeld(
                    f"{self.path.parent.parent} is in use by run {holder.get('run_id')} "
                    f"(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}); "
                    "wait for it to finish or stop it, then re-run")
            aside = self.path.with_name(f".stale-{uuid.uuid4().hex}.json")
            try:
                os.rename(self.path, aside)  # atomic: of two runs taking over, one renames it
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            self.took_over = holder
        else:
            raise OutHeld(f"{self.path}: could not take the hold (another run keeps taking it)")
        self._thread = threading.Thread(target=self._refresh, name="albumforge-hold", daemon=True)
        self._thread.start()
        return self

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
        return True

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            holder["age_s"] = time.time() - self.path.stat().st_mtime
            return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # half-written by a holder that died mid-write
            return {"run_id": "?", "host": "?", "pid": None, "since": "?", "age_s": self.stale_s + 1}

    def _stale(self, holder: dict) -> bool:
        """Gone (same host, pid not running) or silent (not refreshed for stale_s: a live
        holder refreshes every stale_s / 4, so this is a dead host or a reused pid)."""
        same_host = holder.get("host") == self.info["host"] and isinstance(holder.get("pid"), int)
        return (same_host and not _alive(holder["pid"])) or holder.get("age_s", 0.0) > self.stale_s

    def _refresh(self) -> None:
        while not self._stop.wait(self.stale_s / 4):
            try:
                os.utime(self.path)
            except OSError:
                pass

    # ------------------------------------------------------------ letting go
    def release(self) -> None:
        self._stop.set()
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if holder.get("run_id") == self.run_id:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "OutLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
