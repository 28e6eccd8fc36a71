"""What an earlier run already finished, read back from the manifests and the files.

An album is finished when its album row says ``ok`` and every file it names exists.
Of an unfinished album, the items (cover = 0, tracks = 1..N) that are ``ok`` with their
files present are kept, so a re-run redoes exactly the failed or missing ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ray_jobs import manifest as mf

log = logging.getLogger(__name__)


@dataclass
class Finished:
    albums: set[str] = field(default_factory=set)
    items: dict[str, dict[int, dict]] = field(default_factory=dict)  # album -> item_no -> row


def _exists(out: Path, rel) -> bool:
    return bool(rel) and (out / rel).is_file()


def scan_finished(out: Path, album_ids: list[str]) -> Finished:
    out = Path(out)
    wanted = set(album_ids)
    found = Finished()
    for aid in sorted(wanted):
        album_file = mf.manifest_dir(out, "albums") / f"{aid}.parquet"
        tracks_file = mf.manifest_dir(out, "tracks") / f"{aid}.parquet"
        if not album_file.exists():
            continue
        try:
            album = mf.read_file(album_file, "albums").to_pylist()[0]
            tracks = mf.read_file(tracks_file, "tracks").to_pylist() if tracks_file.exists() else []
        except (mf.ManifestError, IndexError) as e:
            log.warning("redoing album %s: %s", aid, e)
            continue
        items: dict[int, dict] = {}
        if album["status"] == mf.STATUS_OK or album.get("cover_path"):
            if _exists(out, album.get("cover_path")):
                items[0] = {"status": "ok", "path": album["cover_path"], "seed": album["cover_seed"],
                            "width": album["cover_width"], "height": album["cover_height"],
                            "gen_s": 0.0, "encode_s": 0.0, "worker": album.get("cover_worker")}
        for t in tracks:
            if t["status"] == mf.STATUS_OK and all(_exists(out, p) for p in (t["paths"] or [t["path"]])):
                items[int(t["track_no"])] = t
        complete = album["status"] == mf.STATUS_OK and 0 in items and len(items) == album["n_tracks"] + 1
        if complete:
            found.albums.add(aid)
        elif items:
            found.items[aid] = items
    return found
