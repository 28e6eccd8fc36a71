"""Album assembly: small pure steps from job rows to manifest rows.

Shared by generate (an album complete in the stream), reroll (images made again) and
resume (what an earlier run finished): each step takes plain values and returns rows,
with no Ray, no files and no clock of its own (``now`` is passed in).

  merge_items    streamed rows + recorded rows -> one row per item (streamed wins)
  track_row      a plan track + its job row (or the kept manifest row) -> a tracks row
  cover_columns  a cover job row -> the albums-manifest cover fields (cover_item: back)
  art_columns    an art job row -> the tracks-manifest art fields
  album_status   the items -> ok, or failed naming each missing item
  album_row      the plan, the items, the timings -> the albums row
  failed_album_row  an album that has no plan -> the albums row naming the error
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from albumforge import manifest as mf
from albumforge.rows import KIND_ART, KIND_COVER, KIND_TRACK, STATUS_FAILED, STATUS_OK

ART_NONE = {k: None for k in ("art_path", "art_seed", "art_width", "art_height", "art_prompt_note",
                              "art_score", "art_reroll", "art_error", "art_worker")}
COVER_NONE = {k: None for k in ("cover_path", "cover_seed", "cover_width", "cover_height", "cover_worker",
                                "cover_prompt_note", "cover_score")}


def _null(v):
    """NaN and "" (how a Ray batch says "none") -> None."""
    return None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else v


def _ok(row: dict | None) -> bool:
    return row is not None and row.get("status") == STATUS_OK


def model_name(section) -> str:
    """What the manifests call a config section's model (tiny and sim models are marked: "sim:<id>")."""
    return section.model_id if section.engine == "real" else f"{section.engine}:{section.model_id}"


# ---------------------------------------------------------------- items
def merge_items(streamed: list[dict], recorded: list[dict]) -> list[dict]:
    """This run's rows, then the recorded rows of items the stream did not bring."""
    made = {(r["kind"], int(r["item_no"])) for r in streamed}
    return list(streamed) + [r for r in recorded if (r["kind"], int(r["item_no"])) not in made]


def cover_columns(row: dict | None, reroll: int = 0) -> dict:
    """The albums-manifest cover fields of a cover job row (None: it never came back;
    ``reroll``: the count to keep then)."""
    if row is None:
        return {**COVER_NONE, "cover_reroll": int(reroll)}
    ok = _ok(row)
    return {
        "cover_path": row["path"] if ok else None,
        "cover_seed": int(row["seed"]) if _null(row.get("seed")) is not None else None,
        "cover_width": int(row["width"]) if ok else None,
        "cover_height": int(row["height"]) if ok else None,
        "cover_worker": _null(row.get("worker")),
        "cover_prompt_note": _null(row.get("prompt_note")) if ok else None,
        "cover_score": _null(row.get("score")) if ok else None,
        "cover_reroll": int(row.get("reroll") or reroll),
    }


def cover_item(album: dict) -> dict:
    """The cover job row an albums-manifest row describes (``cover_columns`` read back): how a
    re-run keeps a cover an earlier run made."""
    return {"kind": KIND_COVER, "item_no": 0, "status": STATUS_OK, "path": album["cover_path"],
            "seed": album["cover_seed"], "width": album["cover_width"], "height": album["cover_height"],
            "gen_s": 0.0, "encode_s": 0.0, "worker": album.get("cover_worker"),
            "prompt_note": album.get("cover_prompt_note"), "score": album.get("cover_score"),
            "reroll": int(album.get("cover_reroll") or 0)}


def art_columns(row: dict | None, lost: str = "art row lost", reroll: int = 0) -> dict:
    """The tracks-manifest ``art_*`` fields of an art job row (None: it never came back)."""
    if row is None:
        return {**ART_NONE, "art_error": lost, "art_reroll": reroll}
    ok = _ok(row)
    return {
        "art_path": row["path"] if ok else None,
        "art_seed": int(row["seed"]) if _null(row.get("seed")) is not None else None,
        "art_width": int(row["width"]) if ok else None,
        "art_height": int(row["height"]) if ok else None,
        "art_prompt_note": _null(row.get("prompt_note")) if ok else None,
        "art_score": _null(row.get("score")) if ok else None,
        "art_reroll": int(row.get("reroll") or 0),
        "art_error": None if ok else str(row.get("error") or "failed"),
        "art_worker": _null(row.get("worker")) if ok else None,
    }


def track_row(album_id: str, run_id: str, no: int, plan_track: dict, row: dict | None, art: dict,
              music, now: datetime, lost: str | None = None) -> dict:
    """A tracks-manifest row from the plan's track and its job row (None: never came back)."""
    row = row or {"status": STATUS_FAILED, "error": lost or "track row lost", "seed": None}
    ok = _ok(row)
    return {
        "album_id": album_id, "run_id": run_id, "track_no": no,
        "status": STATUS_OK if ok else STATUS_FAILED, "error": None if ok else str(row["error"]),
        "title": plan_track["title"], "music_prompt": plan_track["music_prompt"],
        "visual_prompt": plan_track["visual_prompt"],
        "seed": _null(row.get("seed")), "path": row["path"] if ok else None,
        "paths": str(row["paths"]).split("|") if ok else [],
        "duration_s": float(row["actual_s"]) if ok else None, "planned_s": float(plan_track["duration_s"]),
        "sample_rate": int(row["sample_rate"]) if ok else None,
        "lufs": _null(row.get("lufs")) if ok else None,
        "engine": music.engine, "model": model_name(music),
        "gen_s": float(row.get("gen_s") or 0.0), "encode_s": float(row.get("encode_s") or 0.0),
        "worker": _null(row.get("worker")), "lyrics": plan_track.get("lyrics"),
        "windows_json": _null(row.get("windows")) if ok else None,
        "finished_at": now, **art,
    }


# ---------------------------------------------------------------- the album
def album_status(tracks: list[dict], cover_error: str | None, n_tracks: int,
                 track_art: bool) -> tuple[str, str | None]:
    """ok, or failed with every reason: the cover, each track, each art image, lost rows."""
    errors = [f"cover: {cover_error}"] if cover_error else []
    errors += [f"track {t['track_no']}: {t['error']}" for t in tracks if t["status"] != STATUS_OK]
    errors += [f"art {t['track_no']}: {t.get('art_error') or 'missing'}" for t in tracks
               if t.get("art_error") or (track_art and not t.get("art_path"))]
    if len(tracks) != n_tracks:
        errors.append("tracks missing from the manifest")
    return (STATUS_OK, None) if not errors else (STATUS_FAILED, "; ".join(errors)[:4000])


def stage_seconds(rows: list[dict]) -> dict[str, float]:
    """Seconds this album's rows spent in each stage (music, image, encode)."""
    def total(rs, col):
        return sum(float(r.get(col) or 0.0) for r in rs)

    return {"music": total([r for r in rows if r["kind"] == KIND_TRACK], "gen_s"),
            "image": total([r for r in rows if r["kind"] in (KIND_COVER, KIND_ART)], "gen_s"),
            "encode": total(rows, "encode_s")}


def _inputs_json(inputs: dict | None) -> str:
    return json.dumps(inputs or {}, ensure_ascii=False, default=str)


def album_row(*, album_id: str, run_id: str, source: str, concept: str, inputs: dict, seed: int,
              record: dict, tracks: list[dict], cover: dict, status: str, error: str | None,
              seconds: dict[str, float], cfg, director: dict, now: datetime) -> dict:
    """The albums-manifest row of a planned album (``record``: the saved plan record;
    ``cover``: ``cover_columns``; ``director``: ``director.plan.director_columns``)."""
    plan = record["plan"]
    return {
        "album_id": album_id, "run_id": run_id, "status": status, "error": error,
        "source": source, "concept": concept, "inputs_json": _inputs_json(inputs), "seed": seed,
        "title": plan["title"], "artist": plan["artist"], "liner_notes": plan["liner_notes"],
        "genres": plan["soundscape"]["genres"],
        "soundscape_json": json.dumps(plan["soundscape"], ensure_ascii=False),
        "cover_prompt": plan["cover_prompt"], **cover,
        "concept_score": record.get("concept_score"),
        "plan_path": f"plans/{album_id}.json",
        "n_tracks": len(tracks), "n_tracks_ok": sum(t["status"] == STATUS_OK for t in tracks),
        "duration_s": sum(t["duration_s"] or 0.0 for t in tracks),
        "engine": cfg.music.engine, "music_model": model_name(cfg.music), "image_model": model_name(cfg.image),
        "plan_s": float((record.get("director") or {}).get("seconds") or 0.0),
        "music_s": seconds["music"], "image_s": seconds["image"], "encode_s": seconds["encode"],
        "finished_at": now, **director,
    }


def failed_album_row(*, album_id: str, run_id: str, source: str, concept: str, inputs: dict | None,
                     error: str, cfg, director: dict, now: datetime) -> dict:
    """The albums-manifest row of an album with no plan (bad input, a failed plan)."""
    return {**mf.null_row("albums"),
            "album_id": album_id, "run_id": run_id, "status": STATUS_FAILED, "error": error,
            "source": source, "concept": concept, "inputs_json": _inputs_json(inputs), "seed": cfg.seed,
            "engine": cfg.music.engine, "music_model": model_name(cfg.music), "image_model": model_name(cfg.image),
            "n_tracks": 0, "n_tracks_ok": 0, "finished_at": now, **director}
