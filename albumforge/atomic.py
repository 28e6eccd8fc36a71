"""Whole-or-nothing media writes: a temp file of this writer's own, then a rename.

``atomic_path(path)`` yields a fresh temp path next to ``path`` (same directory, so the
rename is atomic), renames it over ``path`` when the block ends, and on any error removes
the temp file and raises ``WriteError`` naming ``path`` and the cause. Temp names carry the
pid and a random part (``.tmp-<pid>-<hex>-<name>``) and are created with O_EXCL: two runs,
or a retried actor beside a dead one, never write into the same temp file.
"""

from __future__ import annotations

import errno as errno_mod
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


class WriteError(OSError):
    """``path`` could not be written. ``errno`` is the cause's (None when it had none), so
    callers can tell a full disk (ENOSPC) from a path that can never work (EISDIR, ENOTDIR)."""

    def __init__(self, path: Path | str, cause: BaseException):
        never = getattr(cause, "errno", None) in (errno_mod.EISDIR, errno_mod.ENOTDIR)
        super().__init__(f"cannot write {path}: {describe(cause)}"
                         + (" (a re-run cannot fix this: move what is in the way)" if never else ""))
        self.errno = getattr(cause, "errno", None)
        self.path = path  # a local Path, or an object storage URL (albumforge.storage)
        self.cause = cause


def describe(e: BaseException) -> str:
    """The cause in words: an OSError's strerror ("No space left on device"), else
    ``Type: message``."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def temp_name(path: Path) -> Path:
    """A temp name beside ``path`` that no other writer uses: pid plus 32 random bits."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def _reserve(path: Path) -> Path:
    """Create (O_EXCL, mode 0666 less the umask, like any new file) and return a temp file."""
    for _ in range(16):
        tmp = temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno_mod.EEXIST, f"no free temp name beside {path}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a new, empty temp file to write; it becomes ``path`` when the block ends.

    Any error (in the block, creating the directory, the rename) removes the temp file and
    is raised as ``WriteError`` (an OSError) chained to the original; KeyboardInterrupt and
    other BaseExceptions remove the temp file and pass through unchanged."""
    path = Path(path)
    tmp: Path | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # mkdir's word for "a file sits where the directory goes"
            raise NotADirectoryError(errno_mod.ENOTDIR, f"{path.parent} is not a directory") from None
        if path.is_dir():  # fail now, not after encoding: rename() would refuse at the end
            raise IsADirectoryError(errno_mod.EISDIR, os.strerror(errno_mod.EISDIR))
        tmp = _reserve(path)
        yield tmp
        os.replace(tmp, path)
        tmp = None
    except Exception as e:
        raise WriteError(path, e) from e
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # the directory itself went away or turned read-only: nothing to clean
