"""The job-row contract: what flows from the plan stage through the actors to the driver.

A plan explodes into one row per work item (the cover, each track, each track's art).
Every row carries the same columns, so Ray Data blocks share one schema whatever their mix;
each actor fills the result columns of its own kind of row and passes the others through.
Rows are made in one place (``job_row``, ``failed_plan_row``): the plan stage and reroll
alike. In Ray batches a float column cannot hold None, so "not measured" travels as NaN;
``from_batch`` turns a row that left the stream back into Python values with real nulls.

Neutral ground: no torch, no Ray; imported by actors/, director/, ray_jobs/ and catalog/.
"""

from __future__ import annotations

import hashlib
import math

# statuses of items, albums and runs (manifests and job rows alike)
STATUS_PENDING = "pending"  # job rows only: not made yet
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"  # runs only: stopped by SIGINT/SIGTERM; a re-run resumes

KIND_TRACK = "track"
KIND_COVER = "cover"
KIND_ART = "art"  # one image per track (item_no = track number, prompt = its visual prompt)
KIND_FAILED = "plan_failed"  # an album whose plan failed: passed through to the driver

# what a job row asks for (set when it is made)
JOB_COLUMNS = ("album_id", "kind", "item_no", "n_items", "prompt", "duration_s", "seed", "reroll")

# result columns every row carries from the start (filled by the actor that owns the row)
RESULT_DEFAULTS = {
    "status": STATUS_PENDING,
    "error": "",
    "path": "",
    "paths": "",  # "|"-joined relative paths of every format written
    "actual_s": 0.0,
    "sample_rate": 0,
    "width": 0,
    "height": 0,
    "gen_s": 0.0,
    "encode_s": 0.0,
    "worker": "",  # JSON: which actor (pid, GPU ids, start time) and when it finished the row
    "prompt_note": "",  # images: how a prompt past CLIP's 77 tokens was handled ("" = it fit)
    "score": math.nan,  # images: CLIP score against the prompt (NaN in a batch = not scored)
    "lufs": math.nan,  # tracks: integrated loudness after mastering (NaN in a batch = not measured)
    "windows": "",  # tracks: JSON window plan (window_s, stride_s, context_s, crossfade_s, windows)
    "busy": "",  # JSON: the actor's model calls for the row's group (actors.faults, albumforge.busy)
}


def job_row(album_id: str, kind: str, item_no: int, n_items: int, prompt: str, duration_s: float,
            base_seed: int, reroll: int = 0) -> dict:
    """The one way a job row is made: identity, what to make, its seed, empty results."""
    if kind not in (KIND_TRACK, KIND_COVER, KIND_ART):
        raise ValueError(f"kind={kind!r} is not a job kind (expected {KIND_TRACK}, {KIND_COVER} or {KIND_ART})")
    return {"album_id": album_id, "kind": kind, "item_no": int(item_no), "n_items": int(n_items),
            "prompt": str(prompt), "duration_s": float(duration_s),
            "seed": item_seed(album_id, kind, item_no, base_seed, reroll), "reroll": int(reroll),
            **RESULT_DEFAULTS}


def failed_plan_row(album_id: str, error: str) -> dict:
    """The single row of an album whose plan failed: it carries the error to the driver."""
    return {"album_id": album_id, "kind": KIND_FAILED, "item_no": -1, "n_items": 1, "prompt": "",
            "duration_s": 0.0, "seed": 0, "reroll": 0,
            **RESULT_DEFAULTS, "status": STATUS_FAILED, "error": str(error)}


def from_batch(row: dict) -> dict:
    """A row that left the stream as plain Python values: NaN and "" results become None."""
    out = {}
    for key, value in row.items():
        value = value.item() if hasattr(value, "item") else value
        if key in RESULT_DEFAULTS and (value == "" or (isinstance(value, float) and math.isnan(value))):
            value = None
        out[key] = value
    return out


def reroll_key(kind: str, item_no: int) -> str:
    """Key of an image in ``Finished.rerolls``: "cover" or "art:N"."""
    return "cover" if kind == KIND_COVER else f"{kind}:{int(item_no)}"


def item_seed(album_id: str, kind: str, item_no: int, base_seed: int, reroll: int = 0) -> int:
    """The seed of a job row. Cover and tracks keep ``derive_seed(album_id, item_no, seed)``;
    art gets its own stream; each re-roll of an image draws a new seed."""
    parts = [album_id, item_no, base_seed] if kind != KIND_ART else [album_id, "art", item_no, base_seed]
    if reroll:
        parts += ["reroll", int(reroll)]
    return derive_seed(*parts)


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (album id, item number, base seed)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def media_dir(album_id: str) -> str:
    """Relative folder of an album's media (album ids are hex, so always path-safe)."""
    if not album_id.isalnum():
        raise ValueError(f"album_id {album_id!r} is not a safe path component")
    return f"media/{album_id}"
