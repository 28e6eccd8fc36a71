"""Read concepts from .txt / .csv / .jsonl / .parquet into validated rows.

Each row gets a stable ``album_id``. Bad rows (empty, too long, not text) are kept as
``Rejected`` entries naming the file and line/row, so the batch goes on and the run
records them as failed albums. Duplicates collapse into one album with a warning.
A missing or unreadable file raises ``ConceptsError`` before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from director.schema import MAX_CONCEPT_CHARS

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".csv", ".jsonl", ".parquet")


class ConceptsError(ValueError):
    """The concepts file as a whole cannot be used."""


@dataclass(frozen=True)
class Concept:
    album_id: str
    concept: str
    inputs: dict = field(default_factory=dict)  # extra input columns (genre, mood, ...)
    source: str = ""  # "file:line" for messages and manifests


@dataclass(frozen=True)
class Rejected:
    album_id: str
    source: str
    error: str
    raw: str = ""


def album_id_for(concept: str, inputs: dict, plan_settings: dict, seed: int) -> str:
    key = json.dumps(
        {"concept": concept, "inputs": inputs, "plan": plan_settings, "seed": seed},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _raw_rows(path: Path) -> tuple[list[tuple[int, dict]], str]:
    """(line or row number, record) pairs, and the word for the number ("line" or "row")."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = []
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                rows.append((no, {"concept": text}))
        return rows, "line"
    if suffix == ".jsonl":
        rows = []
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                record = {"__error__": f"invalid JSON ({e.msg})"}
            if not isinstance(record, dict):
                record = {"__error__": f"expected a JSON object, got {type(record).__name__}"}
            rows.append((no, record))
        return rows, "line"
    if suffix == ".csv":
        # Every column as text: the CSV's own types would turn "1979" into an int.
        names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)).column_names
        table = pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names})
        )
        # header is line 1, so row k (0-based) is on line k+2 (no multi-line cells assumed)
        return [(i + 2, r) for i, r in enumerate(table.to_pylist())], "line"
    if suffix == ".parquet":
        table = pq.read_table(path)
        return [(i + 1, r) for i, r in enumerate(table.to_pylist())], "row"
    raise ConceptsError(f"{path}: unsupported concepts file type {suffix!r} (use one of {SUFFIXES})")


def _clean_inputs(record: dict) -> dict:
    inputs = {}
    for key, value in record.items():
        if key == "concept" or value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        if isinstance(value, str) and not value.strip():
            continue
        inputs[str(key)] = value.strip() if isinstance(value, str) else value
    return inputs


def read_concepts(path: Path, plan_settings: dict, seed: int) -> tuple[list[Concept], list[Rejected]]:
    path = Path(path)
    if not path.is_file():
        raise ConceptsError(f"concepts file not found: {path}")
    try:
        raw, unit = _raw_rows(path)
    except ConceptsError:
        raise
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        raise ConceptsError(f"cannot read concepts file {path}: {e}") from e
    if raw and path.suffix.lower() in (".csv", ".parquet") and "concept" not in raw[0][1]:
        raise ConceptsError(f"{path}: no 'concept' column (columns: {sorted(raw[0][1])})")

    concepts: list[Concept] = []
    rejected: list[Rejected] = []
    seen: dict[str, str] = {}
    for no, record in raw:
        source = f"{path.name}:{no}"
        where = f"{path.name} {unit} {no}"
        if "__error__" in record:
            error = f"{where}: {record['__error__']}"
            rejected.append(Rejected(album_id_for(error, {}, plan_settings, seed), source, error))
            continue
        value = record.get("concept")
        error = None
        if not isinstance(value, str):
            error = f"{where}: field 'concept' must be text, got {type(value).__name__} {value!r:.60}"
        elif not value.strip():
            error = f"{where}: field 'concept' is empty"
        elif len(value.strip()) > MAX_CONCEPT_CHARS:
            error = (
                f"{where}: field 'concept' has {len(value.strip())} characters "
                f"(at most {MAX_CONCEPT_CHARS})"
            )
        if error:
            raw_text = str(value)[:200]
            rejected.append(Rejected(album_id_for(f"{source}|{raw_text}", {}, plan_settings, seed), source, error, raw_text))
            continue
        text = value.strip()
        inputs = _clean_inputs(record)
        aid = album_id_for(text, inputs, plan_settings, seed)
        if aid in seen:
            log.warning("%s: duplicate of %s, made once (album %s)", source, seen[aid], aid)
            continue
        seen[aid] = source
        concepts.append(Concept(aid, text, inputs, source))
    if not concepts and not rejected:
        raise ConceptsError(f"{path}: no concepts found")
    return concepts, rejected
