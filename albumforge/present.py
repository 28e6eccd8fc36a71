"""Is a file that a manifest names still there? Checked for many files at once.

Locally one ``stat`` per file. On object storage, one listing of the file's top folder
(``media/``) serves the whole check: paginated, so about one request per 1,000 files,
never one per file. Paths are relative to OUT, as the manifests hold them.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from albumforge.storage import Store, as_store


def inside(rel: object) -> bool:
    """A plain relative path that stays inside OUT (no ``..``, not absolute, no NUL)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return False
    parts = PurePosixPath(rel).parts
    return bool(parts) and ".." not in parts


class MediaCheck:
    """``check(rel)``: True when the file ``rel`` exists in OUT."""

    def __init__(self, out: Store | str):
        self.store = as_store(out)
        self.root = self.store.url if self.store.local else None
        self.listed: dict[str, set[str]] = {}

    def __call__(self, rel: object) -> bool:
        if not inside(rel):
            return False
        if self.root is not None:
            return os.path.isfile(os.path.join(self.root, rel))
        top = rel.split("/", 1)[0]
        if top not in self.listed:
            self.listed[top] = self._list(top)
        return rel in self.listed[top]

    def _list(self, top: str) -> set[str]:
        fs, base = self.store.fs, self.store.fs._strip_protocol(self.store.uri(top))
        root = self.store.fs._strip_protocol(self.store.url).rstrip("/") + "/"
        fs.invalidate_cache(base)
        try:
            return {p[len(root):] for p in fs.find(base) if p.startswith(root)}
        except FileNotFoundError:
            return set()
