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
from pathlib import Path

from actors.records import album_records
from albumforge.storage import as_store
from albumforge import manifest as mf
from albumforge.rows import KIND_ART, KIND_TRACK, item_seed, reroll_key  # noqa: F401 (re-exported)
from ray_jobs.assemble import ART_NONE, cover_item

log = logging.getLogger(__name__)


@dataclass
class Finished:
    albums: set[str] = field(default_factory=set)
    items: dict[str, dict[int, dict]] = field(default_factory=dict)  # album -> item_no -> row
    art: dict[str, dict[int, dict]] = field(default_factory=dict)  # album -> track_no -> art_* fields
    rerolls: dict[str, dict[str, int]] = field(default_factory=dict)  # album -> reroll_key -> count
    # album -> job rows of items an interrupted run finished (actors.records) after its manifests
    records: dict[str, list[dict]] = field(default_factory=dict)

    def done(self, album_id: str) -> tuple[list[int], list[int]]:
        """Cover/track numbers and art numbers of an album that need not be made again."""
        items = set(self.items.get(album_id, ())) | {
            int(r["item_no"]) for r in self.records.get(album_id, ()) if r["kind"] != KIND_ART}
        art = set(self.art.get(album_id, ())) | {
            int(r["item_no"]) for r in self.records.get(album_id, ()) if r["kind"] == KIND_ART}
        return sorted(items), sorted(art)


def _exists(out, rel) -> bool:
    try:
        return bool(rel) and out.is_file(rel)
    except ValueError:  # a path that leaves OUT
        return False


def scan_finished(out: Path, album_ids: list[str]) -> Finished:
    """What is finished, from the manifests, then from the item records of unfinished albums."""
    out = as_store(out)
    found = Finished()
    for aid in sorted(set(album_ids)):
        rerolls = _scan_manifests(out, aid, found)
        if aid in found.albums:
            continue
        # items an interrupted run finished after its last manifest write; a re-rolled
        # image counts only with the current re-roll count (its seed derives from it)
        kept = {(False, no) for no in found.items.get(aid, ())} | {(True, no) for no in found.art.get(aid, ())}
        recs = [r for r in album_records(out, aid)
                if (r["kind"] == KIND_ART, int(r["item_no"])) not in kept
                and (r["kind"] == KIND_TRACK
                     or int(r.get("reroll") or 0) == rerolls.get(reroll_key(r["kind"], r["item_no"]), 0))]
        if recs:
            found.records[aid] = recs
    return found


def _scan_manifests(out: Path, aid: str, found: Finished) -> dict[str, int]:
    """An album's manifests into ``found``; returns its re-roll counts."""
    album_rel, tracks_rel = f"manifests/albums/{aid}.parquet", f"manifests/tracks/{aid}.parquet"
    if not out.exists(album_rel):
        return {}
    try:
        album = mf.read_file(out.uri(album_rel), "albums").to_pylist()[0]
        tracks = mf.read_file(out.uri(tracks_rel), "tracks").to_pylist() if out.exists(tracks_rel) else []
    except (mf.ManifestError, IndexError) as e:
        log.warning("redoing album %s: %s", aid, e)
        return {}
    items: dict[int, dict] = {}
    art: dict[int, dict] = {}
    rerolls = {"cover": int(album.get("cover_reroll") or 0)}
    if _exists(out, album.get("cover_path")):
        items[0] = cover_item(album)
    for t in tracks:
        no = int(t["track_no"])
        if t["status"] == mf.STATUS_OK and all(_exists(out, p) for p in (t["paths"] or [t["path"]])):
            items[no] = t
        rerolls[reroll_key(KIND_ART, no)] = int(t.get("art_reroll") or 0)
        if not t.get("art_error") and _exists(out, t.get("art_path")):
            art[no] = {k: t.get(k) for k in ART_NONE}
    complete = album["status"] == mf.STATUS_OK and 0 in items and len(items) == album["n_tracks"] + 1
    if complete:
        found.albums.add(aid)
    else:
        if items:
            found.items[aid] = items
        if art:
            found.art[aid] = art
        found.rerolls[aid] = rerolls
    return rerolls
