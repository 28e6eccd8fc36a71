"""Load an OUT's catalogue into the SQL database: an idempotent, incremental upsert.

1. Read and check the whole catalogue first (``albumforge.parts``: one read per part; a
   bad part or row raises ManifestError naming the file and row, before the database is
   touched).
2. Migrate the database to the newest schema (Alembic).
3. In ONE transaction: compare each album's content hash (its row and tracks,
   ``catalog.read.album_hashes``) with the one stored at its last load; upsert runs, and
   only the albums (with their genres and tracks) and songs whose hash changed, with
   INSERT ... ON CONFLICT DO UPDATE; delete the tracks of a reloaded album that its rows
   no longer have.

Loading the same OUT twice, or a resumed run's OUT, leaves exactly one row per run,
album and track; the second load of an unchanged OUT writes no album at all. Tracks of
an album with no album row yet (still being made: the album row is the completion
marker) are skipped and counted. OUT may be a local folder or an object-store URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, create_engine, delete, event, select, tuple_
from sqlalchemy.engine import make_url

from albumforge import parts
from albumforge.manifest import STATUS_FAILED, STATUS_OK, ManifestError
from albumforge.storage import Store, as_store
from catalog.db import migrate
from catalog.db.models import Album, AlbumGenre, Run, Song, Track
from catalog.read import album_hashes, json_object, row_hashes

log = logging.getLogger(__name__)

DB_FILE = "catalog.sqlite"  # the default database: a SQLite file inside OUT
CHUNK = 500  # rows per statement


def default_url(out) -> str:
    store = as_store(out)
    if not store.local:
        raise ValueError(f"out={store.url!r} is not a local folder: give --db (a database URL)")
    return f"sqlite:///{(store.root / DB_FILE).resolve()}"


def safe_url(url: str) -> str:
    """The URL for messages: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"url={safe_url(url)!r}: only sqlite and postgresql databases are supported")
    engine = create_engine(url)
    if backend == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # foreign keys (ON DELETE CASCADE) are off by default
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    return engine


def load(out: Store | str | Path, url: str | None = None) -> dict:
    """Upsert OUT's catalogue into the database at ``url`` (default: OUT/catalog.sqlite).

    Returns counts of what the catalogue holds and this call made sure of: runs, albums,
    tracks, genres, tracks_removed (gone from a reloaded album), tracks_skipped (album
    not finished), songs. ``log`` says how many albums were unchanged (not written).
    """
    store = as_store(out)
    if not parts.has_catalogue(store):
        raise FileNotFoundError(f"out={store.url!r} has no manifests/ folder: not an Albumforge output folder")
    # 1. read and check everything before touching the database
    batch = read_batch(store)
    url = url or default_url(store)

    # 2. schema to head
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        # 3. one transaction for the whole batch: all of it lands, or none of it
        with engine.begin() as conn:
            _upsert(conn, Run.__table__, batch.runs.to_pylist(), ["run_id"])
            stored = dict(conn.execute(select(Album.album_id, Album.row_hash)).all())
            changed = [aid for aid, h in batch.hashes.items() if stored.get(aid) != h]
            albums, tracks = batch.rows_of(changed)
            _upsert(conn, Album.__table__, albums, ["album_id"])
            for ids in _chunks(changed):
                conn.execute(delete(AlbumGenre).where(AlbumGenre.album_id.in_(ids)))
            _insert(conn, AlbumGenre.__table__, _genre_rows(albums))
            _upsert(conn, Track.__table__, tracks, ["album_id", "track_no"])
            removed = _remove_vanished_tracks(conn, changed, {(t["album_id"], t["track_no"]) for t in tracks},
                                              fresh=not stored)
            stored_songs = dict(conn.execute(select(Song.song_id, Song.row_hash)).all())
            songs = batch.songs_changed(stored_songs)
            _upsert(conn, Song.__table__, songs, ["song_id"])
    finally:
        engine.dispose()
    counts = {"runs": batch.runs.num_rows, "albums": batch.albums.num_rows, "tracks": batch.tracks.num_rows,
              "genres": batch.n_genres(), "tracks_removed": removed, "tracks_skipped": batch.skipped,
              "songs": batch.songs.num_rows}
    log.info("loaded %s into %s: %s (%d albums and %d songs unchanged, not written)", store, safe_url(url), counts,
             len(batch.hashes) - len(changed), batch.songs.num_rows - len(songs))
    return counts


class Batch:
    """The checked catalogue: tables, and content hashes to compare with the database."""

    def __init__(self, runs: pa.Table, albums: pa.Table, tracks: pa.Table, songs: pa.Table, skipped: int):
        self.runs, self.albums, self.tracks, self.songs, self.skipped = runs, albums, tracks, songs, skipped
        self.hashes = album_hashes(albums, tracks)

    def rows_of(self, album_ids: list[str]) -> tuple[list[dict], list[dict]]:
        """Album rows (with ``mood`` and ``row_hash``) and track rows of the given albums."""
        if len(album_ids) == len(self.hashes):
            albums, tracks = self.albums, self.tracks
        else:
            ids = pa.array(album_ids, pa.string())
            albums = self.albums.filter(pc.is_in(self.albums["album_id"], ids))
            tracks = self.tracks.filter(pc.is_in(self.tracks["album_id"], ids))
        rows = albums.to_pylist()
        for a in rows:
            mood = json_object(a.get("inputs_json")).get("mood")
            a["mood"] = mood.strip() if isinstance(mood, str) and mood.strip() else None
            a["row_hash"] = self.hashes[a["album_id"]]
        return rows, tracks.to_pylist()

    def songs_changed(self, stored: dict[str, str | None]) -> list[dict]:
        hashes = row_hashes(self.songs, "song_id")
        changed = [sid for sid, h in hashes.items() if stored.get(sid) != h]
        table = self.songs.filter(pc.is_in(self.songs["song_id"], pa.array(changed, pa.string())))
        rows = table.to_pylist()
        for r in rows:
            r["row_hash"] = hashes[r["song_id"]]
        return rows

    def n_genres(self) -> int:
        return sum(len(_genre_keys(g)) for g in self.albums["genres"].to_pylist())


def read_batch(out: Store | str | Path) -> Batch:
    """The whole catalogue, every row checked; ManifestError names a bad file and row."""
    store = as_store(out)
    cat = parts.read_catalogue(store)
    runs = parts.latest(parts.read_kind(store, "runs"))
    songs = parts.latest(parts.read_kind(store, "songs"))
    for view in (runs, cat.albums, cat.tracks, songs):
        _check(view)
    return Batch(runs.rows(), cat.albums.rows(), cat.tracks.rows(), songs.rows(), cat.orphans.table.num_rows)


def _check(view: parts.View) -> None:
    """Keys present, track numbers from 1, statuses known: the first bad row, named."""
    t = view.table
    if t.num_rows == 0:
        return
    for k in parts.KEYS[view.kind]:
        col = t[k]
        bad = pc.is_null(col) if col.type != pa.string() else pc.or_(pc.is_null(col), pc.equal(col, ""))
        _first(view, bad, f"{k} is empty")
    if view.kind == "tracks":
        bad = pc.less(t["track_no"], 1)
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise ManifestError(f"{view.where(i)}: track_no={t['track_no'][i].as_py()} (tracks are numbered from 1)")
    if view.kind != "runs":
        bad = pc.invert(pc.is_in(t["status"], pa.array([STATUS_OK, STATUS_FAILED])))
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise ManifestError(f"{view.where(i)}: status={t['status'][i].as_py()!r} is neither "
                                f"{STATUS_OK!r} nor {STATUS_FAILED!r}")


def _first(view: parts.View, bad, what: str) -> None:
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        raise ManifestError(f"{view.where(pc.index(bad, True).as_py())}: {what}")


def _genre_rows(albums: list[dict]) -> list[dict]:
    return [{"album_id": a["album_id"], "genre": g, "position": i}
            for a in albums for i, g in enumerate(_genre_keys(a.get("genres")))]


def _genre_keys(genres: Iterable | None) -> list[str]:
    keys: list[str] = []
    for g in genres or []:
        k = g.strip().lower() if isinstance(g, str) else ""
        if k and k not in keys:
            keys.append(k)
    return keys


def _chunks(items: list, n: int = CHUNK) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _insert_fn(conn: Connection):
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert


def _upsert(conn: Connection, table, rows: list[dict], keys: list[str]) -> None:
    if not rows:
        return
    names = [c.name for c in table.columns]
    stmt = _insert_fn(conn)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={n: stmt.excluded[n] for n in names if n not in keys})
    for chunk in _chunks(rows):
        conn.execute(stmt, [{n: r.get(n) for n in names} for r in chunk])


def _insert(conn: Connection, table, rows: list[dict]) -> None:
    for chunk in _chunks(rows):
        conn.execute(table.insert(), chunk)


def _remove_vanished_tracks(conn: Connection, album_ids: list[str], present: set[tuple[str, int]],
                            fresh: bool = False) -> int:
    """Delete tracks of the (re)loaded albums that their rows no longer have (none in a
    database that held no album before this load: ``fresh``)."""
    if fresh:
        return 0
    gone: list[tuple[str, int]] = []
    for ids in _chunks(album_ids):
        keys = conn.execute(select(Track.album_id, Track.track_no).where(Track.album_id.in_(ids)))
        gone += [tuple(k) for k in keys if tuple(k) not in present]
    for chunk in _chunks(gone):
        conn.execute(delete(Track).where(tuple_(Track.album_id, Track.track_no).in_(chunk)))
    return len(gone)
