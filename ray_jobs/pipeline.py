"""What every run does, whatever its recipe (``ray_jobs.generate``: albums;
``ray_jobs.covers``: covers for songs): check OUT before anything starts, sweep what a
killed run left half-written, join or start Ray, and stop it again however the run ends.
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from albumforge.atomic import WriteError
from albumforge.storage import as_store
from ray_jobs import console
from ray_jobs.placement import grow_by_pool_bounds, start_in_order

log = logging.getLogger("albumforge")

FATAL_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # every later write would fail too


def init_ray(cfg, verbosity: int = console.NORMAL) -> bool:
    """Join or start Ray; True when this call connected (the run then shuts it down, which
    stops a local Ray it started and, on a cluster, just ends this driver's actors)."""
    import ray

    started = not ray.is_initialized()
    if started:  # workers' output reaches the console with -v only (else it stays in Ray's session logs)
        ray.init(address=cfg.ray_address, log_to_driver=verbosity >= console.VERBOSE,
                 logging_level=logging.INFO if verbosity >= console.VERBOSE else logging.WARNING)
    console.quiet_ray_data(verbosity)
    ctx = ray.data.DataContext.get_current()
    # A block lost to a crashed actor must not end the job: its albums become failed
    # rows (see AlbumWriter) and the next run redoes them.
    ctx.max_errored_blocks = -1
    start_in_order(ctx, cfg)  # music actors take their cards before image actors ask
    grow_by_pool_bounds(ctx)  # a node that joins mid-run gets actors (pool bounds cap the growth)
    return started


def shutdown_ray(wait_s: float | None) -> bool:
    """Stop the Ray this run started. After a signal, wait at most ``wait_s``: a terminal's
    Ctrl-C or a pod's SIGTERM may have hit Ray's own processes too, and a shutdown that
    waits on a dead GCS must not keep the user waiting (the CLI then exits at once)."""
    import threading

    import ray

    t = threading.Thread(target=ray.shutdown, name="albumforge-ray-shutdown", daemon=True)
    t.start()
    t.join(wait_s)
    return not t.is_alive()


class OutError(ValueError):
    """OUT cannot hold a run (a file, not a folder; not writable). A re-run cannot fix it."""


def check_out(out) -> None:
    """A named error, before anything starts, when OUT cannot be a run's output folder: a
    local file in the way, no permission, or (object storage) a missing bucket, no
    credentials, an endpoint that does not answer."""
    store = as_store(out)
    if not store.local:
        probe = f".albumforge/probe-{socket.gethostname()}-{os.getpid()}"
        try:
            store.write_bytes(probe, b"")
            store.delete(probe)
        except Exception as e:  # s3fs/botocore raise many types; the message names no secret
            cause = e.cause if isinstance(e, WriteError) else e
            raise OutError(f"--out {store.url}: cannot write there ({type(cause).__name__}: {cause}): check the "
                           "bucket, the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or a profile) "
                           "and the endpoint (AWS_ENDPOINT_URL)") from None
        return
    out = store.root
    if out.exists() and not out.is_dir():
        raise OutError(f"--out {out} is a file, not a folder: choose another --out (a re-run cannot fix this)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".albumforge-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutError(f"--out {out}: cannot write there ({e.strerror or e}): "
                       "choose another --out or fix its permissions") from None


def sweep_temp_files(out) -> int:
    """Remove ``.tmp-*`` files under OUT's run folders (media, items, manifests, plans).
    Local folders only: object storage has no temp objects (an upload appears whole)."""
    store = as_store(out)
    if not store.local:
        return 0
    out = store.root
    n = 0
    for sub in ("media", "items", "manifests", "plans"):
        for path in (out / sub).rglob(".tmp-*") if (out / sub).is_dir() else ():
            path.unlink(missing_ok=True)
            n += 1
    return n
