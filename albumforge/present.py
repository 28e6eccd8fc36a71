"""Is a file that a manifest names still there? Checked for many files at once.

Locally one listing per folder (a re-run checks every file of every album it skips). On object storage, one listing of the file's top folder
(``media/``) serves the whole check: paginated, so about one request per 1,000 files,
never one per file. Paths are relative to OUT, as the manifests hold them.
"""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pyarrow.compute as pc

from albumforge.storage import Store, as_store, inside


class Resolver:
    """``resolve(rel)``: the real local path of ``root/rel`` when it is a file inside ``root``
    (symlinks followed, and refused when they lead out), else None. Each folder is resolved
    once (``realpath``), each file costs one ``lstat``: fast for a million media files."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.dirs: dict[str, str | None] = {}

    def _dir(self, d: str) -> str | None:
        if d not in self.dirs:
            real = os.path.realpath(os.path.join(self.root, d)) if d else self.root
            self.dirs[d] = real if real == self.root or real.startswith(self.root + os.sep) else None
        return self.dirs[d]

    def __call__(self, rel: object, must_exist: bool = True) -> str | None:
        if not inside(rel):
            return None
        d, _, name = rel.rpartition("/")
        real = self._dir(d)
        if real is None or name in ("", ".", ".."):
            return None
        path = os.path.join(real, name)
        try:
            st = os.lstat(path)
        except OSError:
            return None if must_exist else path
        if stat.S_ISLNK(st.st_mode):
            full = os.path.realpath(path)
            if not full.startswith(self.root + os.sep) or (must_exist and not os.path.isfile(full)):
                return None
            return full
        return path if stat.S_ISREG(st.st_mode) or not must_exist else None


class MediaCheck:
    """``check(rel)``: True when the file ``rel`` exists in OUT."""

    def __init__(self, out: Store | str):
        self.store = as_store(out)
        self.root = self.store.url if self.store.local else None
        self.listed: dict[str, set[str]] = {}

    def __call__(self, rel: object) -> bool:
        if self.root is not None:  # one listing per folder, kept for the whole check
            if not isinstance(rel, str):
                return False
            d, _, name = rel.rpartition("/")
            names = self.listed.get(d)
            if names is None:
                try:
                    names = self.listed[d] = set(os.listdir(os.path.join(self.root, d))) if inside(rel) else set()
                except OSError:
                    names = self.listed[d] = set()
            return name in names
        if not inside(rel):
            return False
        top = rel.split("/", 1)[0]
        if top not in self.listed:
            self.listed[top] = self._list(top)
        return rel in self.listed[top]

    def many(self, rels: pa.Array) -> pa.Array:
        """``rels`` (strings) -> booleans: the same checks for a whole column at once."""
        rels = rels.combine_chunks() if isinstance(rels, pa.ChunkedArray) else rels
        if len(rels) == 0:
            return pa.array([], pa.bool_())
        odd = pc.fill_null(pc.or_(pc.or_(pc.starts_with(rels, "/"), pc.match_substring(rels, "..")),
                                  pc.or_(pc.match_substring(rels, "\\"), pc.match_substring(rels, "\x00"))), False)
        safe = pc.fill_null(pc.and_(pc.is_valid(rels), pc.greater(pc.utf8_length(rels), 0)), False)
        if pc.any(odd).as_py():  # the few with a '..' or worse: checked one by one
            safe = pa.array([ok and (not o or inside(r)) for ok, o, r in zip(safe.to_pylist(), odd.to_pylist(),
                                                                            rels.to_pylist())], pa.bool_())
        if self.root is None:
            listed = set().union(*(self._listing(top) for top in set(
                pc.unique(pc.replace_substring_regex(rels.filter(safe), r"/.*$", "")).to_pylist())))
        else:
            listed = set()
            for d in pc.unique(pc.replace_substring_regex(rels.filter(safe), r"(^|/)[^/]*$", "")).to_pylist():
                try:
                    listed.update(f"{d}/{n}" if d else n for n in os.listdir(os.path.join(self.root, d)))
                except OSError:
                    pass
        found = pc.is_in(rels, value_set=pa.array(list(listed), pa.string()))
        return pc.fill_null(pc.and_(safe, found), False)

    def _listing(self, top: str) -> set[str]:
        if top not in self.listed:
            self.listed[top] = self._list(top)
        return self.listed[top]

    def _list(self, top: str) -> set[str]:
        fs, base = self.store.fs, self.store.fs._strip_protocol(self.store.uri(top))
        root = self.store.fs._strip_protocol(self.store.url).rstrip("/") + "/"
        fs.invalidate_cache(base)
        try:
            return {p[len(root):] for p in fs.find(base) if p.startswith(root)}
        except FileNotFoundError:
            return set()
