"""Parquet manifests: the schemas (declared once), the row key guard, checked reads.

The rows live in a few Parquet parts per kind under OUT/manifests/<kind>/ (albums, tracks,
runs, songs); ``albumforge.parts`` holds that layout: how parts are written, merged and
read so that the latest row of an album wins. Imports pyarrow only.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from albumforge.atomic import atomic_path
from albumforge.rows import STATUS_FAILED, STATUS_INTERRUPTED, STATUS_OK  # noqa: F401 (the statuses of rows)

_ts = pa.timestamp("us", tz="UTC")

ALBUMS = pa.schema(
    [
        pa.field("album_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | failed
        pa.field("error", pa.string()),
        pa.field("source", pa.string()),  # "concepts.txt:12" (file and line/row number)
        pa.field("concept", pa.string()),
        pa.field("inputs_json", pa.string()),  # extra input columns, JSON object
        pa.field("seed", pa.int64()),
        pa.field("title", pa.string()),
        pa.field("artist", pa.string()),
        pa.field("liner_notes", pa.string()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("soundscape_json", pa.string()),
        pa.field("cover_prompt", pa.string()),
        pa.field("cover_path", pa.string()),  # relative to OUT
        pa.field("cover_seed", pa.int64()),
        pa.field("cover_width", pa.int32()),
        pa.field("cover_height", pa.int32()),
        pa.field("cover_worker", pa.string()),  # JSON: the actor that rendered it (pid, GPU ids)
        pa.field("plan_path", pa.string()),  # relative to OUT
        pa.field("n_tracks", pa.int32()),
        pa.field("n_tracks_ok", pa.int32()),
        pa.field("duration_s", pa.float64()),  # sum of ok tracks
        pa.field("director", pa.string()),  # offline | openai
        pa.field("director_model", pa.string()),
        pa.field("director_attempts", pa.int32()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
        pa.field("engine", pa.string()),  # tiny | real
        pa.field("music_model", pa.string()),
        pa.field("image_model", pa.string()),
        pa.field("plan_s", pa.float64()),
        pa.field("music_s", pa.float64()),  # sum of the album's track generation seconds
        pa.field("image_s", pa.float64()),
        pa.field("encode_s", pa.float64()),
        pa.field("finished_at", _ts),
        pa.field("director_json", pa.string()),  # the plan's director meta (director.plan.director_columns)
        pa.field("cover_prompt_note", pa.string()),  # how a cover prompt past CLIP's 77 tokens was handled
        pa.field("cover_score", pa.float64()),  # CLIP score of the cover against cover_prompt (null: unscored)
        pa.field("cover_reroll", pa.int32()),  # times the cover was re-rolled (its seed derives from it)
        pa.field("concept_score", pa.float64()),  # MiniLM cosine of the concept and the plan's text
    ]
)

TRACKS = pa.schema(
    [
        pa.field("album_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("track_no", pa.int32(), nullable=False),  # 1-based
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("title", pa.string()),
        pa.field("music_prompt", pa.string()),
        pa.field("visual_prompt", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("path", pa.string()),  # primary audio file, relative to OUT
        pa.field("paths", pa.list_(pa.string())),  # every format written
        pa.field("duration_s", pa.float64()),
        pa.field("planned_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("lufs", pa.float64()),
        pa.field("engine", pa.string()),
        pa.field("model", pa.string()),
        pa.field("gen_s", pa.float64()),  # this track's share of its batch's generate call
        pa.field("encode_s", pa.float64()),
        pa.field("worker", pa.string()),  # JSON: the actor that made it (pid, GPU ids)
        pa.field("finished_at", _ts),
        pa.field("lyrics", pa.string()),  # the director's lyrics (--lyrics); the music stays instrumental
        pa.field("art_path", pa.string()),  # per-track art (image.track_art), relative to OUT; null: none/failed
        pa.field("art_seed", pa.int64()),
        pa.field("art_width", pa.int32()),
        pa.field("art_height", pa.int32()),
        pa.field("art_prompt_note", pa.string()),  # how a visual prompt past CLIP's 77 tokens was handled
        pa.field("art_score", pa.float64()),  # CLIP score of the art against visual_prompt
        pa.field("art_reroll", pa.int32()),  # times the art was re-rolled
        pa.field("art_error", pa.string()),  # why the art is missing (failed, or marked for a re-roll)
        pa.field("art_worker", pa.string()),  # JSON: the actor that rendered it
        pa.field("windows_json", pa.string()),  # a track's generate() windows: JSON (see actors.music)
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("started_at", _ts),
        pa.field("finished_at", _ts),
        pa.field("wall_s", pa.float64()),
        pa.field("concepts_path", pa.string()),
        pa.field("config_json", pa.string()),  # the full typed config, secrets excluded
        pa.field("versions_json", pa.string()),
        pa.field("resources_json", pa.string()),  # what Ray saw: CPUs, GPUs, pool sizes
        pa.field("engine", pa.string()),
        pa.field("music_model", pa.string()),
        pa.field("image_model", pa.string()),
        pa.field("director", pa.string()),
        pa.field("n_concepts", pa.int32()),  # distinct albums asked for
        pa.field("n_skipped", pa.int32()),  # already finished by an earlier run
        pa.field("n_ok", pa.int32()),  # finished by this run
        pa.field("n_failed", pa.int32()),
        pa.field("n_tracks", pa.int32()),
        pa.field("minutes_per_album", pa.float64()),  # wall minutes / albums made this run
        pa.field("stage_s_json", pa.string()),  # summed seconds per stage
        pa.field("status", pa.string()),  # ok | failed (some albums failed, or the run was stopped) | interrupted
        pa.field("error", pa.string()),  # why the run stopped early (a signal, a lost stage, a full disk)
        # GPU figures (albumforge.busy): per actor busy/wall/load seconds, batches, calls, items, node, GPU ids,
        # peak GPU memory (CUDA) and its merged call spans; summed over cards: busy and held GPU seconds
        pa.field("actors_json", pa.string()),
        pa.field("gpu_busy_s", pa.float64()),
        pa.field("gpu_held_s", pa.float64()),  # per card: from its first actor's start to the run's end
    ]
)

# ``albumforge covers``: one row per song (its completion marker), in the songs parts (albumforge.parts)
SONGS = pa.schema(
    [
        pa.field("song_id", pa.string(), nullable=False),  # hash of the file's bytes
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | failed
        pa.field("error", pa.string()),
        pa.field("source", pa.string()),  # where it was named: "songs/a.mp3", "list.csv:3"
        pa.field("path", pa.string()),  # the input file as read (never modified)
        pa.field("duplicate_paths", pa.list_(pa.string())),  # other files with the same bytes
        pa.field("size_bytes", pa.int64()),
        pa.field("title", pa.string()),  # list columns win over the file's tags
        pa.field("artist", pa.string()),
        pa.field("album", pa.string()),
        pa.field("genre", pa.string()),
        pa.field("year", pa.string()),
        pa.field("tags_json", pa.string()),  # the file's own tags, JSON object
        pa.field("inputs_json", pa.string()),  # a list file's extra columns, JSON object
        pa.field("duration_s", pa.float64()),
        pa.field("lyrics", pa.string()),  # null: instrumental or failed
        pa.field("lyrics_source", pa.string()),  # whisper | tag:USLT | tag:LYRICS | ... | null
        pa.field("language", pa.string()),
        pa.field("language_prob", pa.float64()),
        pa.field("instrumental", pa.bool_()),
        pa.field("speech_s", pa.float64()),  # seconds the voice activity filter kept
        pa.field("transcribe_s", pa.float64()),  # decode + Whisper seconds (0: lyrics from a tag)
        pa.field("lyrics_model", pa.string()),
        pa.field("segments_json", pa.string()),  # [[start_s, end_s, text], ...]
        pa.field("lyrics_worker", pa.string()),  # JSON: the actor that transcribed it
        pa.field("summary", pa.string()),  # the cover plan
        pa.field("motifs", pa.list_(pa.string())),
        pa.field("palette", pa.list_(pa.string())),
        pa.field("mood", pa.string()),
        pa.field("cover_prompt", pa.string()),
        pa.field("plan_path", pa.string()),  # relative to OUT
        pa.field("director", pa.string()),
        pa.field("director_model", pa.string()),
        pa.field("director_attempts", pa.int32()),
        pa.field("tokens_in", pa.int64()),
        pa.field("tokens_out", pa.int64()),
        pa.field("plan_s", pa.float64()),
        pa.field("cover_path", pa.string()),  # relative to OUT
        pa.field("cover_seed", pa.int64()),
        pa.field("cover_width", pa.int32()),
        pa.field("cover_height", pa.int32()),
        pa.field("cover_score", pa.float64()),  # CLIP score against cover_prompt
        pa.field("cover_prompt_note", pa.string()),
        pa.field("cover_worker", pa.string()),
        pa.field("image_model", pa.string()),
        pa.field("image_s", pa.float64()),
        pa.field("embedded_path", pa.string()),  # the copy with the cover embedded (--embed), relative to OUT
        pa.field("engine", pa.string()),  # the image engine: tiny | real
        pa.field("finished_at", _ts),
    ]
)

SCHEMAS = {"albums": ALBUMS, "tracks": TRACKS, "runs": RUNS, "songs": SONGS}


class ManifestError(ValueError):
    """A manifest file that is missing, unreadable or does not match its schema."""


def manifest_dir(out: Path, kind: str) -> Path:
    """The local folder of a kind (tests and tools that look at a local OUT's files)."""
    return Path(out) / "manifests" / kind


def check_rows(rows: list[dict], schema: pa.Schema, what: str) -> None:
    """Every row has exactly the schema's keys: a misspelt or forgotten key is an error
    naming it (``Table.from_pylist`` would turn it into a silent null, or drop it)."""
    names = set(schema.names)
    for i, row in enumerate(rows):
        unknown, missing = sorted(set(row) - names), sorted(names - set(row))
        if unknown or missing:
            raise ManifestError(f"{what} row {i}: "
                                + "; ".join(p for p in (f"unknown keys {unknown}" if unknown else "",
                                                        f"missing keys {missing}" if missing else "") if p))


def null_row(kind: str) -> dict:
    """Every key of a manifest row, all null: a start for rows that leave most fields empty
    (a failed album), so what is left null is said, not forgotten."""
    return {name: None for name in SCHEMAS[kind].names}


def write_rows(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    """Write rows as one local Parquet file, whole or not at all (temp file, then rename)."""
    check_rows(rows, schema, str(path))
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


def conform(table: pa.Table, kind: str, where: str, columns: list[str] | None = None) -> pa.Table:
    """A table read from a file, checked against its schema (``columns`` of it, when given):
    a column added after the file was written is null; a required one missing, or a type
    that does not cast, is a ``ManifestError`` naming ``where``."""
    schema = SCHEMAS[kind]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    missing = [f for f in schema if f.name not in table.schema.names]
    required = [f.name for f in missing if not f.nullable]
    if required:
        raise ManifestError(f"{where}: {kind} manifest lacks columns {required}")
    for f in missing:  # a column added after this file was written: null for its rows
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise ManifestError(f"{where}: {kind} manifest does not match its schema ({e})") from e


def read_file(path: Path, kind: str) -> pa.Table:
    """Read one local manifest file and check it against its schema (error names the file)."""
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise ManifestError(f"{path}: not a readable Parquet file ({e})") from e
    return conform(table, kind, str(path))
