"""One run per OUT: a hold file that names its holder and is kept fresh while it runs.

``OUT/.albumforge/hold.json`` is created exclusively (``O_EXCL``) and names the run id, host,
pid and start time; a thread touches it every ``stale_s / 4`` seconds. A second run on the
same OUT is refused at once with the holder's name. A hold whose holder is gone is taken
over: on the same host when its pid no longer runs, from anywhere when it has not been
refreshed for ``stale_s`` (a holder on another host that stopped without letting go).
The takeover renames the stale file to a unique name first, so of two runs taking over at
once only one wins. The hold is removed when the run ends, however it ends.

On object storage (``s3://…``) there is no rename and no mtime to touch:
- the hold is created with a conditional PUT (``If-None-Match: *``): of two runs, one wins;
- it is kept fresh by rewriting it (same content) every ``stale_s / 4``; its age is the
  object's Last-Modified as the server sees it (so hosts' clocks must roughly agree with
  the server's, within ``stale_s``);
- a stale hold is taken over through a second exclusive create: every hold carries a
  random ``hold_id``, and only the run that creates ``.albumforge/takeover-<hold_id>``
  may delete that hold and create its own; a second run taking over the same stale hold
  loses that create and is refused. A run that starts fresh at that moment races only
  the final exclusive create, which one of them wins. What is not covered: a holder that
  was silent for ``stale_s`` (a paused VM) and then wakes finds its hold taken; it notices
  at its next refresh (the hold names another run), stops refreshing and warns, but goes on
  writing, as a local holder would after a takeover.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from albumforge.storage import Store, as_store

HOLD_REL = ".albumforge/hold.json"
HOLD = Path(HOLD_REL)
log = logging.getLogger("albumforge")


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
    def __init__(self, out: Store | str | Path, run_id: str, stale_s: float = 60.0):
        self.store = as_store(out)
        self.path = self.store.local_path(HOLD_REL) if self.store.local else None
        self.run_id, self.stale_s = run_id, float(stale_s)
        self.info = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "hold_id": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None  # the stale hold this run replaced, if any
        self._token: str | None = None  # object storage: the takeover token this run created

    # ------------------------------------------------------------ taking and keeping it
    def acquire(self) -> "OutLock":
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                break
            holder = self._holder()
            if holder is None:  # vanished between our create and read: try again
                continue
            if not self._stale(holder):
                raise self._refusal(holder)
            if not self._set_aside(holder):
                continue
            self.took_over = holder
        else:
            raise OutHeld(f"{self.store.uri(HOLD_REL)}: could not take the hold (another run keeps taking it)")
        self._thread = threading.Thread(target=self._refresh, name="albumforge-hold", daemon=True)
        self._thread.start()
        return self

    def _refusal(self, holder: dict) -> OutHeld:
        return OutHeld(
            f"{self.store.url} is in use by run {holder.get('run_id')} "
            f"(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}); "
            "wait for it to finish or stop it, then re-run")

    def _set_aside(self, holder: dict) -> bool:
        """Remove a stale hold so that only one run may take it over; False: look again."""
        if self.path is not None:
            aside = self.path.with_name(f".stale-{uuid.uuid4().hex}.json")
            try:
                os.rename(self.path, aside)  # atomic: of two runs taking over, one renames it
            except FileNotFoundError:
                return False
            aside.unlink(missing_ok=True)
            return True
        token = f".albumforge/takeover-{holder.get('hold_id') or uuid.uuid4().hex}"
        if not self.store.create_new(token, json.dumps(self.info).encode()):
            raise self._refusal({**holder, "run_id": f"{holder.get('run_id')} (being taken over by another run)"})
        self.store.delete(HOLD_REL)  # the stale hold: only the token's winner gets here
        self._token = token
        return True

    def _create(self) -> bool:
        if self.path is None:
            return self.store.create_new(HOLD_REL, json.dumps(self.info).encode())
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
        return True

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.store.read_bytes(HOLD_REL))
            holder["age_s"] = time.time() - self.store.mtime(HOLD_REL)
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
                if self.path is not None:
                    os.utime(self.path)
                    continue
                if json.loads(self.store.read_bytes(HOLD_REL)).get("hold_id") != self.info["hold_id"]:
                    log.warning("%s: this run's hold was taken over by another run", self.store.url)
                    return
                self.store.write_text(HOLD_REL, json.dumps(self.info))  # a new Last-Modified
            except (OSError, ValueError):
                pass

    # ------------------------------------------------------------ letting go
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)  # no refresh may rewrite the hold after it goes
        try:
            holder = json.loads(self.store.read_bytes(HOLD_REL))
        except (OSError, ValueError):
            return
        if holder.get("run_id") == self.run_id:
            self.store.delete(HOLD_REL)
        if self._token:
            try:
                self.store.delete(self._token)
            except OSError:
                pass

    def __enter__(self) -> "OutLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
