"""Read the manifests of one OUT folder into plain rows for the site (pyarrow only).

Every value here came from the director or the pipeline and is untrusted: JSON columns
that do not parse, or parse to the wrong shape, become empty; nothing is evaluated.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from albumforge.manifest import STATUS_OK, read_manifest
from albumforge.storage import as_store, is_url
from catalog.slugs import resolve_inside


@dataclass
class Catalog:
    albums: list[dict]  # every album row, ok and failed, sorted for display
    tracks: dict[str, list[dict]]  # album_id -> its track rows by track_no
    runs: list[dict]  # sorted by start time
    has_track_art: bool = False  # the tracks manifest has an ``art_path`` column
    orphan_tracks: list[str] = field(default_factory=list)  # album ids with tracks but no album row

    @property
    def ok_albums(self) -> list[dict]:
        return [a for a in self.albums if a["status"] == STATUS_OK]

    @property
    def failed_albums(self) -> list[dict]:
        return [a for a in self.albums if a["status"] != STATUS_OK]


def json_object(text: object) -> dict:
    """A JSON object column as a dict; anything else (bad JSON, a list, None) as ``{}``."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _plan_lyrics(out, plan_path: object) -> list[str | None]:
    """Per-track lyrics from the plan file, when it exists inside OUT and holds them."""
    if is_url(out):  # object storage: no symlinks to escape through; the Store refuses '..'
        try:
            text = as_store(out).read_bytes(str(plan_path)).decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return []
    else:
        path = resolve_inside(out, plan_path)
        if path is None or not path.is_file():
            return []
        text = path.read_text(encoding="utf-8", errors="replace")
    data = json_object(text)
    plan = data.get("plan") if isinstance(data.get("plan"), dict) else data
    tracks = plan.get("tracks")
    if not isinstance(tracks, list):
        return []
    return [t.get("lyrics") if isinstance(t, dict) and isinstance(t.get("lyrics"), str) else None for t in tracks]


def _sort_key(album: dict) -> tuple:
    name = unicodedata.normalize("NFKD", str(album.get("title") or album.get("concept") or ""))
    return ("".join(c for c in name if not unicodedata.combining(c)).casefold(), str(album["album_id"]))


def read_catalog(out) -> Catalog:
    out = out if is_url(out) else Path(out)
    albums = read_manifest(out, "albums").to_pylist()
    tracks_table = read_manifest(out, "tracks")
    runs = read_manifest(out, "runs").to_pylist()

    tracks: dict[str, list[dict]] = {}
    for row in tracks_table.to_pylist():
        tracks.setdefault(row["album_id"], []).append(row)
    for rows in tracks.values():
        rows.sort(key=lambda r: r["track_no"])

    for album in albums:
        album["inputs"] = json_object(album.get("inputs_json"))
        album["soundscape"] = json_object(album.get("soundscape_json"))
        album["genres"] = [g for g in (album.get("genres") or []) if isinstance(g, str) and g]
        lyrics = _plan_lyrics(out, album.get("plan_path")) if album["status"] == STATUS_OK else []
        for t in tracks.get(album["album_id"], []):
            i = t["track_no"] - 1
            if not isinstance(t.get("lyrics"), str) or not t["lyrics"]:  # older manifests: from the plan
                t["lyrics"] = lyrics[i] if 0 <= i < len(lyrics) else None
    albums.sort(key=_sort_key)
    runs.sort(key=lambda r: (r.get("started_at") is None, r.get("started_at") or 0, r["run_id"]))
    known = {a["album_id"] for a in albums}
    return Catalog(
        albums=albums,
        tracks=tracks,
        runs=runs,
        has_track_art="art_path" in tracks_table.column_names,
        orphan_tracks=sorted(set(tracks) - known),
    )
