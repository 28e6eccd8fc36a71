"""The catalogue on disk (or in a bucket): a few Parquet *parts* per kind, not a file per album.

Layout under OUT/manifests/<kind>/ (kind: albums, tracks, runs, songs)::

  part-<gen>-<seq>-<level>.parquet   rows of many albums (runs, songs), written whole or not at all
  <album_id>.parquet                 a *legacy* file of the release before (one per album/run/song)

Why this design (issue 12): one file per album made a re-run's skip scan, the site, the
loader and stats open 2 x albums files (200,000 GETs on object storage for 100,000 albums).
Here a run buffers finished albums and writes them as one part per kind every
``FLUSH_ALBUMS`` albums or ``FLUSH_S`` seconds, and merges its parts into one when it
ends; when a kind holds more than ``COMPACT_PARTS`` files, everything is compacted
(``albumforge compact OUT`` does it by hand). Reading the catalogue is therefore one
listing per kind plus one read per part: the request count grows with runs, not albums.

Rules that keep resume and idempotence:

* **Order.** Every part has a rank from its name: ``gen`` (one per writer: 1 + the largest
  generation in OUT when it opens; one run holds OUT at a time), ``seq`` (its flushes) and
  ``level`` (compactions). Legacy files rank 0, below every part.
* **Latest wins.** Of the rows with one key (album_id, run_id, song_id), the highest rank
  wins: a re-roll or a resumed album is simply written again. Two rows with one key at
  the same rank (twice in a part, or in two legacy files) are a ``ManifestError`` naming
  both files, never a silent choice.
* **Tracks belong to their album row.** A flush writes an album's tracks and its album row
  into parts of the same rank, tracks first (the album row stays the completion marker).
  An album's tracks are the tracks rows of the rank of its winning album row, so tracks a
  later write no longer has disappear, and tracks whose album row never landed (a crash
  between the two parts) never mix with the album's older ones. Tracks of an album with no
  album row at all are *orphans* (an album still being made): the latest rank's are kept.
* **Compaction is lossless and crash-safe.** It writes the merged latest rows as a part
  ranked above everything it merges (tracks, then albums), then deletes what it merged;
  stopped half way, the leftovers are outranked and change nothing a reader sees.
* **Durability.** Rows buffered in a writer and not yet flushed are lost if the driver is
  killed; the media and the item records (``albumforge.records``) are not, and the re-run
  writes such albums from their records without regenerating anything.

A corrupt or foreign part is a ``ManifestError`` naming it (readers stop; nothing is
dropped). Every read and write goes through ``albumforge.storage.Store``. Imports pyarrow only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from albumforge.manifest import SCHEMAS, ManifestError, check_rows, conform
from albumforge.storage import Store, as_store

FLUSH_ALBUMS = 64  # a writer writes a part once this many albums (or songs) wait...
FLUSH_S = 30.0  # ...or once its oldest buffered row is this old (a slow run still shows progress)
COMPACT_PARTS = 16  # a kind with more files than this is compacted whole when a writer closes
RUN_PARTS = 64  # a writer merges its own parts once it has written this many (a long run)

KEYS = {"albums": ("album_id",), "tracks": ("album_id", "track_no"), "runs": ("run_id",), "songs": ("song_id",)}
META = ("_rank", "_src", "_row")  # columns a read adds: the part's rank, which file, which row of it
_PART = re.compile(r"^part-(\d{8})-(\d{8})-(\d{2})\.parquet$")
_BATCH_KINDS = ("tracks", "albums", "songs", "runs")  # the write order of a flush: tracks before albums


def folder(kind: str) -> str:
    if kind not in SCHEMAS:
        raise ValueError(f"kind={kind!r} is not a manifest kind ({', '.join(SCHEMAS)})")
    return f"manifests/{kind}"


@dataclass(frozen=True, order=True)
class PartId:
    gen: int
    seq: int
    level: int = 0

    @property
    def name(self) -> str:
        return f"part-{self.gen:08d}-{self.seq:08d}-{self.level:02d}.parquet"

    @property
    def rank(self) -> int:
        return (self.gen * 10**8 + self.seq) * 100 + self.level


def parse(name: str) -> PartId | None:
    """The id of a part's file name; None for anything else (a legacy file)."""
    m = _PART.match(name)
    return PartId(int(m[1]), int(m[2]), int(m[3])) if m else None


def manifest_files(out, kind: str) -> list[tuple[str, int]]:
    """(path relative to OUT, rank) of every manifest file of a kind, lowest rank first: one listing."""
    store = as_store(out)
    files = []
    for name in store.listdir(folder(kind)):
        if name.startswith(".") or not name.endswith(".parquet"):
            continue  # temp files of a writer still writing, anything not Parquet
        pid = parse(name)
        files.append((f"{folder(kind)}/{name}", pid.rank if pid else 0))
    return sorted(files, key=lambda f: (f[1], f[0]))


def has_catalogue(out) -> bool:
    return as_store(out).exists("manifests")


# ---------------------------------------------------------------- reading
@dataclass
class View:
    """Rows of one kind with where each came from (``META`` columns), for named errors."""

    kind: str
    table: pa.Table
    files: list[str] = field(default_factory=list)  # the full name (local path or URL) of each _src

    def where(self, i: int) -> str:
        return f"{self.files[self.table['_src'][i].as_py()]}: row {self.table['_row'][i].as_py()}"

    def rows(self) -> pa.Table:
        return self.table.drop_columns([c for c in META if c in self.table.column_names])

    def take(self, mask_or_indices) -> View:
        t = self.table.filter(mask_or_indices) if _is_mask(mask_or_indices) else self.table.take(mask_or_indices)
        return View(self.kind, t, self.files)


def _is_mask(x) -> bool:
    return isinstance(x, (pa.Array, pa.ChunkedArray)) and x.type == pa.bool_()


def _read_one(store: Store, rel: str, kind: str, columns: list[str] | None) -> pa.Table:
    """One file, checked against its schema (only ``columns`` when given)."""
    uri = store.uri(rel)
    try:
        source = str(store.local_path(rel)) if store.local else pa.BufferReader(store.read_bytes(rel))
        pf = pq.ParquetFile(source)
        present = pf.schema_arrow.names
        wanted = None if columns is None else [c for c in columns if c in present]
        table = pf.read(columns=wanted)
    except FileNotFoundError as e:  # compacted away between the listing and the read
        raise ManifestError(f"{uri}: vanished while reading (another process compacting?): re-run") from e
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise ManifestError(f"{uri}: not a readable Parquet file ({e})") from e
    return conform(table, kind, uri, columns)


def read_kind(out, kind: str, columns: list[str] | None = None) -> View:
    """Every row of every file of a kind (no supersession), with ``META`` columns."""
    store = as_store(out)
    files = manifest_files(store, kind)
    schema = SCHEMAS[kind] if columns is None else pa.schema([SCHEMAS[kind].field(c) for c in columns])
    if not files:
        empty = schema.empty_table()
        for name, typ in (("_rank", pa.int64()), ("_src", pa.int32()), ("_row", pa.int32())):
            empty = empty.append_column(name, pa.array([], typ))
        return View(kind, empty, [])
    cols = None if columns is None else list(columns)

    def one(i_file):
        i, (rel, rank) = i_file
        t = _read_one(store, rel, kind, cols)
        n = t.num_rows
        return (t.append_column("_rank", pa.array([rank] * n, pa.int64()))
                 .append_column("_src", pa.array([i] * n, pa.int32()))
                 .append_column("_row", pa.array(range(n), pa.int32())))

    if store.local or len(files) == 1:
        tables = [one(f) for f in enumerate(files)]
    else:  # one GET per part, a few at a time
        with ThreadPoolExecutor(8) as pool:
            tables = list(pool.map(one, enumerate(files)))
    return View(kind, pa.concat_tables(tables), [store.uri(rel) for rel, _ in files])


def _dup_error(view: View, i: int, j: int, key: tuple[str, ...]) -> ManifestError:
    t = view.table
    k = {c: t[c][i].as_py() for c in key}
    return ManifestError(f"{view.where(i)}: {k} is also in {view.where(j)}")


def latest(view: View, key: tuple[str, ...] | None = None) -> View:
    """One row per key: the highest rank's. Two at one rank: ``ManifestError`` naming both."""
    key = key or KEYS[view.kind]
    t = view.table
    if t.num_rows == 0:
        return view
    order = pc.sort_indices(t, sort_keys=[*((c, "ascending") for c in key), ("_rank", "descending")])
    t = t.take(order)
    sorted_view = View(view.kind, t, view.files)
    if t.num_rows == 1:
        return sorted_view
    same = None
    for c in key:
        col = t[c].combine_chunks()
        eq = pc.fill_null(pc.equal(col.slice(1), col.slice(0, len(col) - 1)), False)
        same = eq if same is None else pc.and_(same, eq)
    rank = t["_rank"].combine_chunks()
    clash = pc.and_(same, pc.equal(rank.slice(1), rank.slice(0, len(rank) - 1)))
    if pc.any(clash).as_py():
        j = pc.index(clash, True).as_py()
        raise _dup_error(sorted_view, j + 1, j, key)
    first = pa.concat_arrays([pa.array([True]), pc.invert(same)])
    return sorted_view.take(first)


def pair_tracks(tracks: View, albums: View) -> tuple[View, View]:
    """(tracks of each album's winning rank, orphan tracks: latest rank of albums with no row)."""
    if tracks.table.num_rows == 0:
        return tracks, tracks
    _unique_per_rank(tracks)
    slim = pa.table({"album_id": tracks.table["album_id"], "_rank": tracks.table["_rank"],
                     "_i": pa.array(range(tracks.table.num_rows), pa.int64())})
    win = pa.table({"album_id": albums.table["album_id"], "_win": albums.table["_rank"]})
    j = slim.join(win, "album_id", join_type="left outer")
    kept = j.filter(pc.equal(j["_rank"], j["_win"]))
    lone = j.filter(pc.is_null(j["_win"]))
    if lone.num_rows:
        top = lone.group_by("album_id").aggregate([("_rank", "max")])
        lone = lone.join(top, "album_id").filter(pc.equal(pc.field("_rank"), pc.field("_rank_max")))
    def in_file_order(rows: pa.Table) -> View:  # as written: an album's tracks together, by number
        idx = rows["_i"].combine_chunks() if rows.num_rows else pa.array([], pa.int64())
        return tracks.take(pc.take(idx, pc.sort_indices(idx)))

    return in_file_order(kept), in_file_order(lone)


def _unique_per_rank(view: View) -> None:
    """A track twice in one part (or in two legacy files): a named error, whichever wins."""
    t = view.table
    if t.num_rows < 2:
        return
    keys = ["_rank", "album_id", "track_no"]
    if pa.table([t[k] for k in keys], names=keys).group_by(keys).aggregate([]).num_rows == t.num_rows:
        return  # (a hash count: cheap) no duplicate; else sort to name the first one
    t = t.take(pc.sort_indices(t, sort_keys=[("_rank", "ascending"), ("album_id", "ascending"),
                                             ("track_no", "ascending")]))
    same = None
    for c in ("_rank", "album_id", "track_no"):
        col = t[c].combine_chunks()
        eq = pc.fill_null(pc.equal(col.slice(1), col.slice(0, len(col) - 1)), False)
        same = eq if same is None else pc.and_(same, eq)
    if pc.any(same).as_py():
        j = pc.index(same, True).as_py()
        raise _dup_error(View(view.kind, t, view.files), j + 1, j, KEYS["tracks"])


@dataclass
class Catalogue:
    albums: View  # the latest row of every album
    tracks: View  # the tracks of those rows
    orphans: View  # tracks of albums with no album row yet (still being made)


def read_catalogue(out, albums_columns: list[str] | None = None,
                   tracks_columns: list[str] | None = None) -> Catalogue:
    """Albums (latest) with their tracks; columns projected when given (keys always read)."""
    def cols(c, kind):
        return None if c is None else list(dict.fromkeys([*KEYS[kind], *c]))

    albums = latest(read_kind(out, "albums", cols(albums_columns, "albums")))
    tracks, orphans = pair_tracks(read_kind(out, "tracks", cols(tracks_columns, "tracks")), albums)
    return Catalogue(albums, tracks, orphans)


def read_latest(out, kind: str, columns: list[str] | None = None) -> pa.Table:
    """What a reader sees of one kind: latest rows; tracks are those of the albums' rows plus
    orphans (sorted by album and track). No ``META`` columns."""
    if kind == "tracks":
        cat = read_catalogue(out, ["album_id"], columns)
        return pa.concat_tables([cat.tracks.rows(), cat.orphans.rows()])
    return latest(read_kind(out, kind, columns)).rows()


# ---------------------------------------------------------------- writing
def _table(kind: str, rows: list[dict], where: str) -> pa.Table:
    check_rows(rows, SCHEMAS[kind], where)
    return pa.Table.from_pylist(rows, schema=SCHEMAS[kind])


def _write_part(store: Store, kind: str, pid: PartId, table: pa.Table) -> str:
    rel = f"{folder(kind)}/{pid.name}"
    with store.writing(rel) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return rel


def next_gen(store: Store) -> int:
    """1 + the largest generation of any part in OUT (4 listings)."""
    gens = [parse(rel.rsplit("/", 1)[1]).gen for kind in SCHEMAS for rel, rank in manifest_files(store, kind) if rank]
    return max(gens, default=0) + 1


class CatalogWriter:
    """Buffers rows and writes them as parts: ``album(row, tracks)``, ``row(kind, row)``.

    ``flush()`` writes what waits (one part per kind, tracks before albums); ``close()``
    flushes, merges this writer's parts into one and compacts a kind that has grown past
    ``COMPACT_PARTS`` files. A key written twice before a flush keeps its last rows.
    """

    def __init__(self, out, flush_albums: int = FLUSH_ALBUMS, flush_s: float = FLUSH_S):
        self.store = as_store(out)
        self.flush_albums, self.flush_s = flush_albums, flush_s
        self.gen: int | None = None  # taken at the first flush
        self.seq = 0
        self.buffer: dict[str, dict[str, list[dict]]] = {k: {} for k in _BATCH_KINDS}
        self.since: float | None = None
        self.mine: list[PartId] = []  # parts this writer wrote (merged by close)

    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close(compact=exc[0] is None)

    def album(self, album: dict, tracks: list[dict]) -> None:
        """An album's row and its tracks rows (all of them: the album's whole track list)."""
        aid = album["album_id"]
        if any(t["album_id"] != aid for t in tracks):
            raise ManifestError(f"album {aid}: a tracks row names another album")
        check_rows([album], SCHEMAS["albums"], f"album {aid}")
        check_rows(tracks, SCHEMAS["tracks"], f"album {aid} tracks")
        self.buffer["tracks"][aid] = tracks
        self.buffer["albums"][aid] = [album]
        self._added()

    def tracks_only(self, album_id: str, tracks: list[dict]) -> None:
        """Tracks of an album whose row comes later (an album still being made)."""
        check_rows(tracks, SCHEMAS["tracks"], f"album {album_id} tracks")
        self.buffer["tracks"][album_id] = tracks
        self._added()

    def row(self, kind: str, row: dict) -> None:
        """A run or song row (its key replaces any buffered row with that key)."""
        if kind not in ("runs", "songs"):
            raise ValueError(f"kind={kind!r}: use album() for albums and tracks")
        check_rows([row], SCHEMAS[kind], f"{kind} row")
        self.buffer[kind][row[KEYS[kind][0]]] = [row]
        self._added()

    def _added(self) -> None:
        self.since = self.since or time.monotonic()
        waiting = max(len(b) for b in self.buffer.values())
        if waiting >= self.flush_albums or time.monotonic() - self.since >= self.flush_s:
            self.flush()

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self.buffer.values())

    def flush(self) -> PartId | None:
        """Write what waits; returns the parts' id (None when nothing waited)."""
        if not self.pending:
            return None
        if self.gen is None:
            self.gen = next_gen(self.store)
        self.seq += 1
        pid = PartId(self.gen, self.seq)
        for kind in _BATCH_KINDS:
            rows = [r for group in self.buffer[kind].values() for r in group]
            if self.buffer[kind]:
                _write_part(self.store, kind, pid, _table(kind, rows, f"{kind} part {pid.name}"))
        self.buffer = {k: {} for k in _BATCH_KINDS}
        self.since = None
        self.mine.append(pid)
        if len(self.mine) >= RUN_PARTS:
            self._merge_mine()
        return pid

    def _merge_mine(self) -> None:
        if len(self.mine) > 1:
            pid = merge(self.store, self.mine)
            self.seq = pid.seq
            self.mine = [pid]

    def close(self, compact: bool = True) -> None:
        """Flush; with ``compact``, merge this writer's parts and compact a kind with too many files."""
        self.flush()
        if not compact:
            return
        self._merge_mine()
        if any(len(manifest_files(self.store, k)) > COMPACT_PARTS for k in SCHEMAS):
            compact_all(self.store)


# ---------------------------------------------------------------- compaction
def _merged(store: Store, kind: str, chosen: set[str] | None) -> tuple[View, list[str]]:
    """All rows of a kind (or of the ``chosen`` files only) and the files they came from."""
    view = read_kind(store, kind)
    rels = [rel for rel, _ in manifest_files(store, kind)]
    if chosen is not None:
        keep = [i for i, rel in enumerate(rels) if rel.rsplit("/", 1)[1] in chosen]
        view = view.take(pc.is_in(view.table["_src"], pa.array(keep, pa.int32())))
        rels = [rels[i] for i in keep]
    return view, rels


def merge(out, parts: Iterable[PartId] | None = None) -> PartId:
    """Merge the given parts (None: every file of every kind, legacy ones too) into one
    part per kind, ranked above all of them; then delete them. Returns the new id."""
    store = as_store(out)
    chosen = None if parts is None else {p.name for p in parts}
    ids = [parse(rel.rsplit("/", 1)[1]) for k in SCHEMAS for rel, _ in manifest_files(store, k)]
    ids = [p for p in ids if p is not None and (chosen is None or p.name in chosen)]
    if ids:  # ranked just above the newest part merged (and below anything written later)
        top = max(ids)
        new = PartId(top.gen, top.seq, max(p.level for p in ids if (p.gen, p.seq) == (top.gen, top.seq)) + 1)
    else:  # legacy files only
        new = PartId(next_gen(store), 0)
    if new.level > 99:
        raise ManifestError(f"{store.uri('manifests')}: too many compactions of one part ({new})")
    albums, album_files = _merged(store, "albums", chosen)
    albums = latest(albums)
    tracks, track_files = _merged(store, "tracks", chosen)
    kept, orphans = pair_tracks(tracks, albums)
    out_tables = {"tracks": pa.concat_tables([kept.rows(), orphans.rows()]), "albums": albums.rows()}
    sources = {"tracks": track_files, "albums": album_files}
    for kind in ("runs", "songs"):
        view, sources[kind] = _merged(store, kind, chosen)
        out_tables[kind] = latest(view).rows()
    for kind in _BATCH_KINDS:  # tracks before albums, as a flush writes them
        if sources[kind]:
            _write_part(store, kind, new, out_tables[kind].cast(SCHEMAS[kind]))
    written = {f"{folder(k)}/{new.name}" for k in SCHEMAS}
    for kind in ("albums", "tracks", "songs", "runs"):  # markers first: leftovers are outranked anyway
        for rel in sources[kind]:
            if rel not in written:
                store.delete(rel)
    return new


def compact_all(out) -> dict:
    """Compact every kind into one part (legacy per-album files included: the migration).
    Returns how many files each kind had before."""
    store = as_store(out)
    before = {k: len(manifest_files(store, k)) for k in SCHEMAS}
    if sum(before.values()):
        merge(store, None)
    return before


# ---------------------------------------------------------------- one-shot writes
def write_album(out, album: dict, tracks: list[dict]) -> PartId | None:
    """An album's rows as their own parts now (re-roll, tests); no compaction."""
    w = CatalogWriter(out)
    w.album(album, tracks)
    return w.flush()


def write_row(out, kind: str, row: dict) -> PartId | None:
    """One run or song row as its own part now."""
    w = CatalogWriter(out)
    w.row(kind, row)
    return w.flush()
