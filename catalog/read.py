"""Read the catalogue of one OUT (a folder or an object-store URL) into rows for the site.

One read per catalogue part (``albumforge.parts``). Album rows become dicts (the index
needs them all); tracks stay in one Arrow table and become dicts only for the albums
whose pages are rendered (``Catalog.tracks_for``), so an incremental build of a large
catalogue touches only what changed. ``hashes`` holds a content hash per album (its row
and its tracks): what the site and the SQL loader compare to skip unchanged albums.

Every value here came from the director or the pipeline and is untrusted: JSON columns
that do not parse, or parse to the wrong shape, become empty; nothing is evaluated.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from albumforge import parts
from albumforge.manifest import STATUS_OK
from albumforge.parts import read_latest
from albumforge.storage import Store, as_store


@dataclass
class Catalog:
    albums: list[dict]  # every album row, ok and failed, sorted for display (+ ``inputs``: parsed inputs_json)
    tracks_table: pa.Table  # the tracks of those rows, by album and track number
    runs: list[dict]  # sorted by start time
    store: Store | None = None  # OUT, for the plans' lyrics of older manifests
    has_track_art: bool = False  # the tracks manifest has an ``art_path`` column
    orphan_tracks: list[str] = field(default_factory=list)  # album ids with tracks but no album row
    hashes: dict[str, str] = field(default_factory=dict)  # album_id -> content hash of its rows

    @cached_property
    def ok_albums(self) -> list[dict]:
        return [a for a in self.albums if a["status"] == STATUS_OK]

    @cached_property
    def failed_albums(self) -> list[dict]:
        return [a for a in self.albums if a["status"] != STATUS_OK]

    def tracks_for(self, albums: list[dict]) -> dict[str, list[dict]]:
        """album_id -> its track rows by track number, for many albums at once."""
        if not albums:
            return {}
        table = self.tracks_table
        if len(albums) < len(self.albums):
            table = table.filter(pc.is_in(table["album_id"], pa.array([a["album_id"] for a in albums], pa.string())))
        out: dict[str, list[dict]] = {}
        for t in table.to_pylist():
            out.setdefault(t["album_id"], []).append(t)
        for album in albums:
            self._lyrics(album, out.get(album["album_id"], []))
        return out

    def _lyrics(self, album: dict, rows: list[dict]) -> None:
        if any(not isinstance(t.get("lyrics"), str) or not t["lyrics"] for t in rows):
            lyrics = _plan_lyrics(self.store, album.get("plan_path")) if album["status"] == STATUS_OK else []
            for t in rows:
                i = t["track_no"] - 1
                if not isinstance(t.get("lyrics"), str) or not t["lyrics"]:
                    t["lyrics"] = lyrics[i] if 0 <= i < len(lyrics) else None

    def failed_tracks(self) -> dict[str, list[dict]]:
        """album_id -> its tracks that are not ok (of every album)."""
        bad = self.tracks_table.filter(pc.not_equal(self.tracks_table["status"], STATUS_OK))
        out: dict[str, list[dict]] = {}
        for t in bad.to_pylist():
            out.setdefault(t["album_id"], []).append(t)
        return out


def json_object(text: object) -> dict:
    """A JSON object column as a dict; anything else (bad JSON, a list, None) as ``{}``."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _plan_lyrics(store: Store | None, plan_path: object) -> list[str | None]:
    """Per-track lyrics from the plan file, when it exists inside OUT and holds them."""
    if store is None or not isinstance(plan_path, str) or not plan_path:
        return []
    try:
        text = store.read_bytes(plan_path).decode("utf-8", errors="replace")
    except (OSError, ValueError):  # missing, or not a path inside OUT
        return []
    data = json_object(text)
    plan = data.get("plan") if isinstance(data.get("plan"), dict) else data
    tracks = plan.get("tracks")
    if not isinstance(tracks, list):
        return []
    return [t.get("lyrics") if isinstance(t, dict) and isinstance(t.get("lyrics"), str) else None for t in tracks]


def _sort_key(album: dict) -> tuple:
    name = unicodedata.normalize("NFKD", str(album.get("title") or album.get("concept") or ""))
    return ("".join(c for c in name if not unicodedata.combining(c)).casefold(), str(album["album_id"]))


def album_hashes(albums: pa.Table, tracks: pa.Table) -> dict[str, str]:
    """album_id -> a hash of the album's row and its tracks rows (polars' row hashes: the
    same rows give the same hash with one polars version; another version only reloads)."""
    if albums.num_rows == 0:
        return {}
    a = pl.from_arrow(albums).select(pl.col("album_id"), pl.from_arrow(albums).hash_rows().alias("ha"))
    if tracks.num_rows:
        tf = pl.from_arrow(tracks)
        t = (tf.select(pl.col("album_id"), pl.col("track_no"), tf.hash_rows().alias("h"))
             .group_by("album_id").agg(pl.col("h").sort_by("track_no").hash().alias("ht")))
        a = a.join(t, on="album_id", how="left")
    else:
        a = a.with_columns(pl.lit(None, pl.UInt64).alias("ht"))
    h = a.select(pl.col("album_id"), pl.struct("ha", "ht").hash().alias("h"))
    return {aid: f"{v:016x}" for aid, v in zip(h["album_id"].to_list(), h["h"].to_list())}


def row_hashes(table: pa.Table, key: str) -> dict[str, str]:
    """key -> a hash of its row (songs)."""
    if table.num_rows == 0:
        return {}
    df = pl.from_arrow(table)
    return {k: f"{v:016x}" for k, v in zip(df[key].to_list(), df.hash_rows().to_list())}


def read_catalog(out: Store | str) -> Catalog:
    store = as_store(out)
    cat = parts.read_catalogue(store)
    albums_table, tracks_table = cat.albums.rows(), cat.tracks.rows()
    albums = albums_table.to_pylist()
    runs = read_latest(store, "runs").to_pylist()
    for album in albums:
        album["inputs"] = json_object(album.get("inputs_json"))
        album["genres"] = [g for g in (album.get("genres") or []) if isinstance(g, str) and g]
    albums.sort(key=_sort_key)
    runs.sort(key=lambda r: (r.get("started_at") is None, r.get("started_at") or 0, r["run_id"]))
    return Catalog(
        albums=albums,
        tracks_table=tracks_table,
        runs=runs,
        store=store,
        has_track_art="art_path" in tracks_table.column_names,
        orphan_tracks=sorted(set(cat.orphans.table["album_id"].to_pylist())),
        hashes=album_hashes(albums_table, tracks_table),
    )
