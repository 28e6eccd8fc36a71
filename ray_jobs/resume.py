"""What an earlier run already finished, read back from the manifests and the files.

An album is finished when its album row says ``ok`` and every file it names exists.
Of an unfinished album, the items (cover = 0, tracks = 1..N, and per-track art) that are
``ok`` with their files present are kept, so a re-run redoes exactly the failed or missing
ones. An image marked for a re-roll (``ray_jobs.reroll``) is missing by construction: its
path is cleared and its re-roll counter raised, so the re-run draws it with a new seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from albumforge.records import album_records
from albumforge import manifest as mf
from albumforge import parts
from albumforge.present import MediaCheck
from albumforge.storage import as_store
from albumforge.rows import KIND_ART, KIND_TRACK, item_seed, reroll_key  # noqa: F401 (re-exported)
from ray_jobs.assemble import ART_NONE, cover_item

log = logging.getLogger(__name__)


@dataclass
class Finished:
    albums: set[str] = field(default_factory=set)
    items: dict[str, dict[int, dict]] = field(default_factory=dict)  # album -> item_no -> row
    art: dict[str, dict[int, dict]] = field(default_factory=dict)  # album -> track_no -> art_* fields
    rerolls: dict[str, dict[str, int]] = field(default_factory=dict)  # album -> reroll_key -> count
    # album -> job rows of items an interrupted run finished (albumforge.records) after its manifests
    records: dict[str, list[dict]] = field(default_factory=dict)

    def done(self, album_id: str) -> tuple[list[int], list[int]]:
        """Cover/track numbers and art numbers of an album that need not be made again."""
        items = set(self.items.get(album_id, ())) | {
            int(r["item_no"]) for r in self.records.get(album_id, ()) if r["kind"] != KIND_ART}
        art = set(self.art.get(album_id, ())) | {
            int(r["item_no"]) for r in self.records.get(album_id, ()) if r["kind"] == KIND_ART}
        return sorted(items), sorted(art)


ALBUM_COLUMNS = ["status", "n_tracks", "cover_path"]  # what decides that an album is finished
TRACK_COLUMNS = ["track_no", "status", "path", "paths"]


def scan_finished(out, album_ids: list[str]) -> Finished:
    """What is finished, from the catalogue, then from the item records of unfinished albums.

    One read of the catalogue's parts, column-projected; full rows are read only when some
    asked-for album is there but unfinished. A corrupt part is a ``ManifestError`` naming it.
    """
    store = as_store(out)
    want = sorted(set(album_ids))
    found = Finished()
    if not want:
        return found
    exists = MediaCheck(store)
    ids = pa.array(want, pa.string())
    cat = parts.read_catalogue(store, ALBUM_COLUMNS, TRACK_COLUMNS)
    albums = cat.albums.rows().filter(pc.is_in(cat.albums.table["album_id"], ids))
    tracks = cat.tracks.rows().filter(pc.is_in(cat.tracks.table["album_id"], ids))
    found.albums = _complete(albums, tracks, exists)
    rest = sorted(set(albums["album_id"].to_pylist()) - found.albums)
    rerolls: dict[str, dict[str, int]] = {}
    if rest:  # kept items of unfinished albums need their whole rows
        full = parts.read_catalogue(store)
        keep = pa.array(rest, pa.string())
        rows = full.albums.rows().filter(pc.is_in(full.albums.table["album_id"], keep)).to_pylist()
        by_album: dict[str, list[dict]] = {}
        for t in full.tracks.rows().filter(pc.is_in(full.tracks.table["album_id"], keep)).to_pylist():
            by_album.setdefault(t["album_id"], []).append(t)
        for album in rows:
            rerolls[album["album_id"]] = _scan_album(album, by_album.get(album["album_id"], []), exists, found)
    for aid in want:
        if aid in found.albums:
            continue
        # items an interrupted run finished after its last manifest write; a re-rolled
        # image counts only with the current re-roll count (its seed derives from it)
        counts = rerolls.get(aid, {})
        kept = {(False, no) for no in found.items.get(aid, ())} | {(True, no) for no in found.art.get(aid, ())}
        recs = [r for r in album_records(out, aid)
                if (r["kind"] == KIND_ART, int(r["item_no"])) not in kept
                and (r["kind"] == KIND_TRACK
                     or int(r.get("reroll") or 0) == counts.get(reroll_key(r["kind"], r["item_no"]), 0))]
        if recs:
            found.records[aid] = recs
    return found


def _complete(albums: pa.Table, tracks: pa.Table, exists: MediaCheck) -> set[str]:
    """Albums whose row says ok, whose every track is ok, and whose every file exists
    (column-wise: one folder listing per album folder, no Python work per file)."""
    ok = albums.filter(pc.and_(pc.equal(albums["status"], mf.STATUS_OK), pc.is_valid(albums["cover_path"])))
    ok_tracks = tracks.filter(pc.equal(tracks["status"], mf.STATUS_OK))
    counted = ok_tracks.group_by("album_id").aggregate([("track_no", "count")])
    n_ok = dict(zip(counted["album_id"].to_pylist(), counted["track_no_count"].to_pylist()))
    candidates = {aid for aid, n in zip(ok["album_id"].to_pylist(), ok["n_tracks"].to_pylist())
                  if n_ok.get(aid, 0) == (n or 0)}
    # every file: the cover, and each ok track's paths (or its path when it has no list)
    paths = ok_tracks["paths"].combine_chunks()
    has_list = pc.fill_null(pc.greater(pc.list_value_length(paths), 0), False)
    listed = paths.filter(has_list)
    single = ok_tracks.filter(pc.invert(has_list))
    owners = pa.concat_arrays([
        ok["album_id"].combine_chunks(),
        pc.take(ok_tracks["album_id"].filter(has_list).combine_chunks(), pc.list_parent_indices(listed)),
        single["album_id"].combine_chunks()])
    files = pa.concat_arrays([ok["cover_path"].combine_chunks(), pc.list_flatten(listed),
                              single["path"].combine_chunks()])
    missing = set(owners.filter(pc.invert(exists.many(files))).to_pylist())
    return candidates - missing


def _scan_album(album: dict, tracks: list[dict], exists: MediaCheck, found: Finished) -> dict[str, int]:
    """An unfinished album's kept items into ``found``; returns its re-roll counts."""
    aid = album["album_id"]
    items: dict[int, dict] = {}
    art: dict[int, dict] = {}
    rerolls = {"cover": int(album.get("cover_reroll") or 0)}
    if exists(album.get("cover_path")):
        items[0] = cover_item(album)
    for t in tracks:
        no = int(t["track_no"])
        if t["status"] == mf.STATUS_OK and all(exists(p) for p in (t["paths"] or [t["path"]])):
            items[no] = t
        rerolls[reroll_key(KIND_ART, no)] = int(t.get("art_reroll") or 0)
        if not t.get("art_error") and exists(t.get("art_path")):
            art[no] = {k: t.get(k) for k in ART_NONE}
    if items:
        found.items[aid] = items
    if art:
        found.art[aid] = art
    found.rerolls[aid] = rerolls
    return rerolls
