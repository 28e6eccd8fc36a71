"""Item records: a finished item, written by the actor that made it, next to the run's media.

An actor writes a record the moment an item's media is on disk (media first, atomically;
then the record, atomically), so what is finished survives whatever happens to the driver
(Ctrl-C, SIGKILL, OOM, a full disk while writing manifests). A re-run's resume scan reads
the records of every unfinished album and never generates a recorded item again; a
retried batch inside one run skips them too.

  OUT/items/<album_id>/track-01.json   cover.json   art-01.json

A record is the item's job row (``actors.jobs``): identity (album, kind, number, seed,
re-roll) and results (paths, duration, size, scores, worker, timings). It counts only
while every file it names exists and its seed is the one the item would be drawn with
now (a re-rolled image draws a new seed: its old record no longer counts).
"""

from __future__ import annotations

import json

from albumforge.rows import KIND_ART, KIND_COVER, KIND_TRACK, RESULT_DEFAULTS, STATUS_OK
from albumforge.storage import Store, as_store

RECORDS_DIR = "items"
_IDENTITY = ("album_id", "kind", "item_no", "seed", "reroll")


def record_name(kind: str, item_no: int) -> str:
    """cover.json, track-NN.json, art-NN.json."""
    if kind == KIND_COVER:
        return "cover.json"
    if kind in (KIND_TRACK, KIND_ART):
        return f"{kind}-{int(item_no):02d}.json"
    raise ValueError(f"kind={kind!r} has no item record (expected cover, track or art)")


def record_path(album_id: str, kind: str, item_no: int) -> str:
    """The record's path inside OUT."""
    if not str(album_id).isalnum():
        raise ValueError(f"album_id {album_id!r} is not a safe path component")
    return f"{RECORDS_DIR}/{album_id}/{record_name(kind, item_no)}"


def _plain(value):
    """numpy scalars -> Python values; NaN -> None (JSON has no NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def write_record(out: Store | str, row: dict, run_id: str | None = None) -> str:
    """Record one finished (status "ok") job row, whole or not at all."""
    if row.get("status") != STATUS_OK:
        raise ValueError(f"only a finished item is recorded (status={row.get('status')!r})")
    rec = {k: _plain(row[k]) for k in (*_IDENTITY, *RESULT_DEFAULTS) if k in row}
    rec["run_id"] = run_id
    rel = record_path(str(row["album_id"]), str(row["kind"]), int(row["item_no"]))
    as_store(out).write_text(rel, json.dumps(rec, ensure_ascii=False))
    return rel


def _files_exist(store: Store, rec: dict) -> bool:
    paths = [p for p in str(rec.get("paths") or rec.get("path") or "").split("|") if p]
    try:
        return bool(paths) and all(store.is_file(p) for p in paths)
    except ValueError:  # a path that leaves OUT: not this item's file
        return False


def read_record(out: Store | str, album_id: str, kind: str, item_no: int, seed: int | None = None) -> dict | None:
    """The item's record when it still counts (files present; same seed when given), else None."""
    out = as_store(out)
    try:
        rec = json.loads(out.read_bytes(record_path(album_id, kind, item_no)))
    except (OSError, ValueError):
        return None
    if rec.get("status") != STATUS_OK or not _files_exist(out, rec):
        return None
    if seed is not None and rec.get("seed") != int(seed):
        return None
    return rec


def album_records(out: Store | str, album_id: str) -> list[dict]:
    """Every record of an album whose files are all present (seeds are checked by the caller)."""
    out = as_store(out)
    folder = f"{RECORDS_DIR}/{album_id}"
    found = []
    for name in out.listdir(folder):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        try:
            rec = json.loads(out.read_bytes(f"{folder}/{name}"))
        except (OSError, ValueError):
            continue
        if rec.get("status") == STATUS_OK and _files_exist(out, rec):
            found.append(rec)
    return found
