"""What a person sees during a run: one live line, then a summary. The chatter goes to a file.

By default the console shows the albums bar (ok/failed of N, tracks done, elapsed, ETA)
and albumforge's own warnings; everything else (Ray, Ray Data's operator dumps, the model
libraries' warnings and progress bars, Python warnings) goes to
``OUT/.albumforge/logs/<run_id>.log``, named in the summary. Object storage cannot be
appended to: for an ``s3://…`` OUT the live log is a local file (the temp folder's
``albumforge-logs/<run_id>.log``), uploaded to the same place in OUT when the run ends,
however it ends (``publish_log``). ``-v`` shows Ray Data's
progress bars and the workers' output too; ``--quiet`` shows errors and the summary only.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from albumforge.storage import as_store

QUIET, NORMAL, VERBOSE = 0, 1, 2

# set before the libraries are imported (and inherited by a local Ray's workers)
LIBRARY_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "1",
}


def new_run_id(at: datetime | None = None) -> str:
    """20261124T183000-1a2b3c: sortable by start time, unique."""
    return (at or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


RAY_DATA_LOGGING = ('{"version": 1, "disable_existing_loggers": false, '
                    '"loggers": {"ray.data": {"level": "INFO", "handlers": [], "propagate": true}}}')


class _Own(logging.Filter):
    """The console's share at the normal level: albumforge's own records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "albumforge" or record.name.startswith(("albumforge.", "ray_jobs", "actors", "director"))


def setup(verbosity: int = NORMAL) -> None:
    """Route logging for one run: the console's share (see ``log_to`` for the file)."""
    if verbosity < VERBOSE:
        for key, value in LIBRARY_ENV.items():
            os.environ.setdefault(key, value)
        # Ray Data's own logger prints to stderr (tracebacks too) and does not propagate: send
        # it to the root logger instead (its file, and the console's filter), by its documented
        # RAY_DATA_LOGGING_CONFIG (read when ray.data is imported)
        if "RAY_DATA_LOGGING_CONFIG" not in os.environ:
            fd, path = tempfile.mkstemp(prefix="albumforge-ray-data-logging-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write(RAY_DATA_LOGGING)
            os.environ["RAY_DATA_LOGGING_CONFIG"] = path
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.setLevel({QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.INFO}[verbosity])
    if verbosity < VERBOSE:
        console.addFilter(_Own())
    root.addHandler(console)
    logging.getLogger("albumforge").setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings.warn from the libraries: into the file


class _QuietFileHandler(logging.FileHandler):
    """The run's log file; when it cannot be written (a full disk) it says so once and stops,
    instead of logging's own traceback for every record."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not getattr(self, "_failed", False):
            self._failed = True
            print(f"albumforge: the log {self.baseFilename} cannot be written any more "
                  f"({sys.exc_info()[1]}); the console goes on", file=sys.stderr)
        logging.getLogger().removeHandler(self)


LOG_DIR = ".albumforge/logs"


def log_to(out, run_id: str) -> Path | None:
    """Everything at INFO and up into ``OUT/.albumforge/logs/<run_id>.log`` (None when OUT
    cannot hold it: the run then names that problem itself). For object storage: a local
    file, uploaded by ``publish_log``."""
    root = logging.getLogger()
    store = as_store(out)
    if store.local:
        path = Path(out) / LOG_DIR / f"{run_id}.log"
    else:
        path = Path(tempfile.gettempdir()) / "albumforge-logs" / f"{run_id}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _QuietFileHandler(path, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    return path


def publish_log(out, run_id: str, path: Path | None) -> str | Path | None:
    """Object storage: upload the run's local log to ``OUT/.albumforge/logs/<run_id>.log``
    and return its URL (a local OUT's log is already there: returned as it is). A failed
    upload is said on the console and the local file is kept."""
    store = as_store(out)
    if store.local or path is None:
        return path
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.absolute():
            h.flush()
    try:
        store.write_bytes(f"{LOG_DIR}/{run_id}.log", path.read_bytes())
    except OSError as e:
        print(f"albumforge: the log could not be uploaded ({e}); it stays at {path}", file=sys.stderr)
        return path
    return store.uri(f"{LOG_DIR}/{run_id}.log")


def quiet_ray_data(verbosity: int) -> None:
    """Ray Data's progress bars and its execution dumps only with -v."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbosity >= VERBOSE
    ctx.print_on_execution_start = verbosity >= VERBOSE
    if verbosity < VERBOSE:
        for name in ("ray", "ray.data"):
            lib = logging.getLogger(name)
            lib.setLevel(logging.WARNING)
            lib.propagate = True
            for h in list(lib.handlers):
                if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.stdout):
                    lib.removeHandler(h)


def summary_lines(summary, failed: list[tuple[str, str]], log_path: Path | str | None, limit: int = 10) -> list[str]:
    """The closing lines: counts, minutes per album, each failed album and why, the log."""
    mpa = summary.minutes_per_album
    lines = [f"run {summary.run_id} {summary.status}: {summary.n_ok} ok, {summary.n_failed} failed, "
             f"{summary.n_skipped} skipped (already done), {summary.n_tracks} tracks in {summary.wall_s:.1f} s"
             + (f", {mpa:.2f} min/album" if mpa else "") + f" -> {summary.out}"]
    if summary.error:
        lines.append(f"stopped: {summary.error}")
    for source, error in failed[:limit]:
        first = (error or "").strip().splitlines()[0] if (error or "").strip() else "failed"
        lines.append(f"  failed {source}: {first[:300]}")
    if len(failed) > limit:
        lines.append(f"  ... and {len(failed) - limit} more failed albums (albumforge stats {summary.out})")
    if log_path is not None:
        lines.append(f"log: {log_path}")
    return lines
