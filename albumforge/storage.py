"""Where a run's outputs live: ``Store(out)``, a local folder or any fsspec URL.

``--out`` is a local path (as ever) or a URL of any filesystem fsspec knows:
``s3://bucket/prefix`` (s3fs; also MinIO, Ceph and other S3-compatible servers),
``gs://…`` (gcsfs), ``abfs://…`` (adlfs), ``memory://…`` (tests). Every module that reads or
writes OUT goes through a ``Store``, so the same code runs on a laptop's disk and on a
cluster whose nodes share nothing but a bucket. Paths given to a Store are relative to OUT
and always use ``/`` (the same strings the manifests hold).

Credentials and endpoints come from the filesystem's standard environment, never from
Albumforge's config: for S3 ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL`` (an S3-compatible server), ``AWS_REGION``, or a
profile / instance role. A Store pickles as its URL alone (Ray actors rebuild it from the
URL on their node), so no secret travels in a task or lands in a manifest.

Writes are whole or nothing: locally a temp file of this writer's own and a rename
(``albumforge.atomic``); on object storage one PUT (an object appears only when its upload
completes). ``create_new`` is an exclusive create (``O_EXCL`` locally, ``If-None-Match: *``
on S3) for the one-run-per-OUT hold.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from albumforge.atomic import WriteError, atomic_path


class StoreError(OSError):
    """OUT cannot be used: an unknown URL scheme, a filesystem package that is not installed."""


def inside(rel: object) -> bool:
    """A plain relative path that stays inside OUT: not absolute, ``/``-separated, no ``..``,
    no NUL (the strings the manifests hold). Cheap: called for every media file a scan checks."""
    return (isinstance(rel, str) and rel != "" and rel[0] != "/" and "\\" not in rel and "\x00" not in rel
            and "/../" not in f"/{rel}/")


def _check_rel(rel: str, root_ok: bool = False) -> str:
    """``rel`` when it is a path inside OUT (``inside``), else ValueError; ``""`` is OUT
    itself where ``root_ok``."""
    rel = str(rel)
    if (rel == "" and root_ok) or inside(rel):
        return rel
    raise ValueError(f"{rel!r} is not a path inside OUT (relative, '/'-separated, no '..')")


def is_url(out: str | os.PathLike) -> bool:
    """``s3://…`` and friends; a local path (or ``file://``) is not."""
    text = str(out)
    return "://" in text and not text.startswith("file://")


class Store:
    """OUT: a local folder (``Path``) or an fsspec URL. ``url`` is what the user gave."""

    def __init__(self, out: str | os.PathLike):
        self.url = str(out).rstrip("/") if is_url(out) else str(Path(str(out).removeprefix("file://")).absolute())
        self.local = not is_url(self.url)
        self._fs = None  # built on first remote use (and again in each process that unpickles us)

    # --- identity --------------------------------------------------------------------
    def __reduce__(self):  # the URL only: a filesystem object holds sessions and credentials
        return (Store, (self.url,))

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other) -> bool:
        return isinstance(other, Store) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def fs(self):
        """The fsspec filesystem (local: ``LocalFileSystem``)."""
        if self._fs is None:
            import fsspec

            try:
                # no listings cache: other processes (actors on other nodes) write here too
                self._fs, _ = fsspec.core.url_to_fs(self.url, **({} if self.local else {"use_listings_cache": False}))
            except (ImportError, ValueError) as e:
                raise StoreError(f"--out {self.url}: {e}") from e
        return self._fs

    @property
    def root(self) -> Path:
        """The local folder (a local Store only)."""
        if not self.local:
            raise StoreError(f"{self.url} is not a local folder")
        return Path(self.url)

    def uri(self, rel: str = "") -> str:
        """A full name for messages and the site's links: a local path or ``s3://…``."""
        return f"{self.url}/{_check_rel(rel)}" if _check_rel(rel, root_ok=True) else self.url

    def _path(self, rel: str) -> str:
        """The filesystem's own name for ``rel`` (fsspec strips the protocol)."""
        return self.fs._strip_protocol(self.uri(rel))

    def local_path(self, rel: str) -> Path:
        return self.root / _check_rel(rel, root_ok=True)

    # --- reading ---------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.local:
            return self.local_path(rel).exists()
        return self.fs.exists(self._path(rel))

    def is_dir(self, rel: str) -> bool:
        """A folder (on object storage: a prefix that holds objects)."""
        if self.local:
            return self.local_path(rel).is_dir()
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return self.fs.isdir(path)

    def is_file(self, rel: str) -> bool:
        if self.local:
            return self.local_path(rel).is_file()
        return self.fs.isfile(self._path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""
        if self.local:
            return self.local_path(rel).read_bytes()
        return self.fs.cat_file(self._path(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def open(self, rel: str, mode: str = "rb"):
        """A binary file object to read (pyarrow and soundfile take it)."""
        if mode != "rb":
            raise ValueError("Store.open reads only; write with write_bytes or writing()")
        if self.local:
            return open(self.local_path(rel), "rb")
        return self.fs.open(self._path(rel), "rb")

    def mtime(self, rel: str) -> float:
        """When ``rel`` was last written (epoch seconds); ``FileNotFoundError`` when absent.
        On object storage this is the server's clock (an object's Last-Modified)."""
        if self.local:
            return self.local_path(rel).stat().st_mtime
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return self.fs.modified(path).timestamp()

    def size(self, rel: str) -> int:
        """The object's size in bytes; ``FileNotFoundError`` when absent."""
        if self.local:
            return self.local_path(rel).stat().st_size
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        return int(self.fs.info(path)["size"])

    def download(self, rel: str, dest: Path) -> None:
        """Copy ``rel`` into the local file ``dest`` (for libraries that need a real file)."""
        if self.local:
            shutil.copyfile(self.local_path(rel), dest)
        else:
            self.fs.get_file(self._path(rel), str(dest))

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) in a folder, sorted; [] when it does not exist. Always fresh:
        other processes (actors on other nodes) write here, so no cached listing is used."""
        if self.local:
            folder = self.local_path(rel)
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        path = self._path(rel)
        self.fs.invalidate_cache(path)
        try:
            return sorted(PurePosixPath(p).name for p in self.fs.ls(path, detail=False)
                          if p.rstrip("/") != path.rstrip("/"))
        except FileNotFoundError:
            return []

    # --- writing ---------------------------------------------------------------------
    @contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        """Yield a new local file to write; it becomes ``rel`` when the block ends, whole or
        not at all. Errors are ``WriteError`` (an OSError) naming the destination."""
        rel = _check_rel(rel)
        if self.local:
            with atomic_path(self.local_path(rel)) as tmp:
                yield tmp
            return
        spool = Path(tempfile.mkdtemp(prefix="albumforge-put-"))
        try:
            tmp = spool / PurePosixPath(rel).name  # the real suffix: writers pick the format by it
            tmp.touch()
            yield tmp
            self.fs.put_file(str(tmp), self._path(rel))
        except Exception as e:  # as atomic_path does locally: any failure names the destination
            raise WriteError(self.uri(rel), e) from e
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.writing(rel) as tmp:
            tmp.write_bytes(data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    def create_new(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` holding ``data`` only if it does not exist (atomically); False when
        it does. Local: ``O_EXCL``. Object storage: a conditional PUT (``If-None-Match: *``),
        which S3 and S3-compatible servers honour; a filesystem without exclusive creation
        is a ``StoreError`` (it cannot hold OUT for one run)."""
        rel = _check_rel(rel)
        if self.local:
            path = self.local_path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        try:
            with self.fs.open(self._path(rel), "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError) as e:
            raise StoreError(f"{self.url}: this filesystem has no exclusive create ({e})") from e

    def delete(self, rel: str) -> None:
        """Remove a file; nothing when it is not there."""
        if self.local:
            self.local_path(rel).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass


def as_store(out: Store | str | os.PathLike) -> Store:
    """A Store for OUT given as a Store, a path or a URL."""
    return out if isinstance(out, Store) else Store(out)
