"""Load an OUT folder's manifests into the SQL catalogue: an idempotent upsert.

1. Read and check every manifest file first (a bad one raises ManifestError naming it,
   before the database is touched).
2. Migrate the database to the newest schema (Alembic).
3. In ONE transaction: upsert runs (key run_id), albums (album_id), tracks
   (album_id, track_no) with INSERT ... ON CONFLICT DO UPDATE; replace each album's
   genre rows; delete the tracks of a reloaded album that its manifest no longer has.

Loading the same folder twice, or a resumed run's folder, leaves exactly one row per
run, album and track. Tracks of an album with no album manifest yet (still being made:
the album file is the completion marker) are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, delete, event, select, tuple_
from sqlalchemy.engine import make_url

from albumforge.storage import as_store, is_url
from albumforge.manifest import (
    STATUS_FAILED,
    STATUS_OK,
    ManifestError,
    manifest_files,
    read_file,
)
from catalog.db import migrate
from catalog.db.models import Album, AlbumGenre, Run, Song, Track
from catalog.read import json_object

log = logging.getLogger(__name__)

DB_FILE = "catalog.sqlite"  # the default database: a SQLite file inside OUT
CHUNK = 500  # rows per statement


def default_url(out) -> str:
    """SQLite in OUT; an object storage OUT cannot hold a database file: ``--db`` is needed."""
    if is_url(out):
        raise ValueError(f"out={str(out)!r} is object storage, which cannot hold a SQLite file: give --db "
                         "(e.g. --db sqlite:///catalog.sqlite or a postgresql URL)")
    return f"sqlite:///{(Path(out) / DB_FILE).resolve()}"


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


def load(out: Path, url: str | None = None) -> dict:
    """Upsert OUT's manifests into the database at ``url`` (default: OUT/catalog.sqlite).

    Returns counts of what this call loaded: runs, albums, tracks, genres,
    tracks_removed (gone from a reloaded album), tracks_skipped (album not finished).
    """
    out = out if is_url(out) else Path(out)
    if not as_store(out).is_dir("manifests"):
        raise FileNotFoundError(f"out={str(out)!r} has no manifests/ folder: not an Albumforge output folder")
    # 1. read and check everything before touching the database
    runs, albums, tracks, skipped = read_batch(out)
    songs = _rows(out, "songs", ("song_id",))  # `albumforge covers` (none for an albums-only OUT)
    genres = [
        {"album_id": a["album_id"], "genre": g, "position": i}
        for a in albums for i, g in enumerate(_genre_keys(a.get("genres")))
    ]
    for a in albums:
        mood = json_object(a.get("inputs_json")).get("mood")
        a["mood"] = mood.strip() if isinstance(mood, str) and mood.strip() else None

    # 2. schema to head
    engine = make_engine(url or default_url(out))
    try:
        migrate.upgrade(engine)
        # 3. one transaction for the whole batch: all of it lands, or none of it
        with engine.begin() as conn:
            _upsert(conn, Run.__table__, runs, ["run_id"])
            _upsert(conn, Album.__table__, albums, ["album_id"])
            album_ids = [a["album_id"] for a in albums]
            for ids in _chunks(album_ids):
                conn.execute(delete(AlbumGenre).where(AlbumGenre.album_id.in_(ids)))
            _insert(conn, AlbumGenre.__table__, genres)
            _upsert(conn, Track.__table__, tracks, ["album_id", "track_no"])
            removed = _remove_vanished_tracks(conn, album_ids, {(t["album_id"], t["track_no"]) for t in tracks})
            _upsert(conn, Song.__table__, songs, ["song_id"])
    finally:
        engine.dispose()
    counts = {"runs": len(runs), "albums": len(albums), "tracks": len(tracks), "genres": len(genres),
              "tracks_removed": removed, "tracks_skipped": skipped, "songs": len(songs)}
    log.info("loaded %s into %s: %s", out, safe_url(url or default_url(out)), counts)
    return counts


def read_batch(out: Path) -> tuple[list[dict], list[dict], list[dict], int]:
    """(runs, albums, tracks, n tracks skipped), every file checked; ManifestError names a bad one."""
    runs = _rows(out, "runs", ("run_id",))
    albums = _rows(out, "albums", ("album_id",))
    tracks = _rows(out, "tracks", ("album_id", "track_no"))
    finished = {a["album_id"] for a in albums}
    kept = [t for t in tracks if t["album_id"] in finished]
    return runs, albums, kept, len(tracks) - len(kept)


def _rows(out, kind: str, key: tuple[str, ...]) -> list[dict]:
    rows, seen = [], {}
    for path in manifest_files(out, kind):
        for i, row in enumerate(read_file(path, kind).to_pylist()):
            where = f"{path}: row {i}"
            for k in key:
                if row.get(k) is None or row.get(k) == "":
                    raise ManifestError(f"{where}: {k} is empty")
            if kind == "tracks" and row["track_no"] < 1:
                raise ManifestError(f"{where}: track_no={row['track_no']} (tracks are numbered from 1)")
            if kind != "runs" and row["status"] not in (STATUS_OK, STATUS_FAILED):
                raise ManifestError(f"{where}: status={row['status']!r} is neither {STATUS_OK!r} nor {STATUS_FAILED!r}")
            k = tuple(row[c] for c in key)
            if k in seen:
                raise ManifestError(f"{where}: {dict(zip(key, k))} is also in {seen[k]}")
            seen[k] = path
            rows.append(row)
    return rows


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


def _remove_vanished_tracks(conn: Connection, album_ids: list[str], present: set[tuple[str, int]]) -> int:
    gone: list[tuple[str, int]] = []
    for ids in _chunks(album_ids):
        keys = conn.execute(select(Track.album_id, Track.track_no).where(Track.album_id.in_(ids)))
        gone += [tuple(k) for k in keys if tuple(k) not in present]
    for chunk in _chunks(gone):
        conn.execute(delete(Track).where(tuple_(Track.album_id, Track.track_no).in_(chunk)))
    return len(gone)
