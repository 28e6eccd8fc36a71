"""Read concepts from .txt / .csv / .jsonl / .parquet into validated rows.

Each row gets a stable ``album_id``. Bad rows (empty, too long, not text, a control
character in a text field) are kept as ``Rejected`` entries naming the file and line/row,
so the batch goes on and the run records them as failed albums. Duplicates collapse into
one album with a warning. A missing or unreadable file, one that is not UTF-8, or one
that is not text at all (most of its lines hold control characters: binary, UTF-16)
raises ``ConceptsError`` before Ray starts.

Text files are split on newlines only (``\n``, ``\r\n``, ``\r``), never on the other
characters ``str.splitlines`` takes for line breaks (``\x0b``, ``\x0c``, ``\x1c``-``\x1e``,
``\x85``, U+2028, U+2029).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from director.schema import MAX_CONCEPT_CHARS

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".csv", ".jsonl", ".parquet")
TEXT_SUFFIXES = (".txt", ".csv", ".jsonl")
NEWLINE = re.compile(r"\r\n|\r|\n")  # the only line breaks (str.splitlines knows eight more)
ALLOWED_CONTROLS = frozenset("\t")  # the one control character a concept may hold


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


def _lines(text: str) -> list[str]:
    """``text`` split on \\n, \\r\\n and \\r only."""
    return NEWLINE.split(text)


def control_char(text: str) -> tuple[int, str] | None:
    """(1-based position, character) of the first control character (Unicode category Cc,
    tab excepted) in ``text``, or None."""
    for i, ch in enumerate(text):
        if ch not in ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            return i + 1, ch
    return None


def _named(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def escape_controls(text: str) -> str:
    """``text`` with control characters written as \\xNN / \\uNNNN (NULs and the like
    must not reach manifests, the site or PostgreSQL)."""
    return "".join(
        ch if ch in ALLOWED_CONTROLS or unicodedata.category(ch) != "Cc" else ascii(ch)[1:-1] for ch in text
    )


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM dropped); ConceptsError where it is not UTF-8, or not
    text at all: most non-blank lines holding control characters is a binary file (or
    UTF-16), never a list of concepts."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = e.start + len(data) - len(e.object)  # utf-8-sig reports positions after the BOM
        line = data[:offset].count(b"\n") + 1
        raise ConceptsError(
            f"cannot read concepts file {path}: not UTF-8 text (byte 0x{data[offset]:02x} at offset "
            f"{offset}, line {line}); save it as UTF-8"
        ) from None
    lines = [(no, line) for no, line in enumerate(_lines(text), start=1) if line.strip()]
    bad = [(no, hit) for no, line in lines if (hit := control_char(line))]
    if bad and 2 * len(bad) > len(lines):
        no, (pos, ch) = bad[0]
        raise ConceptsError(
            f"{path} is not a text concepts file: {len(bad)} of {len(lines)} lines hold control "
            f"characters (line {no}: {_named(ch)} at character {pos}); is it binary, or UTF-16? "
            "Concepts files are UTF-8 text"
        )
    return text


def _raw_rows(path: Path) -> tuple[list[tuple[int, dict]], str]:
    """(line or row number, record) pairs, and the word for the number ("line" or "row")."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConceptsError(f"{path}: unsupported concepts file type {suffix!r} (use one of {SUFFIXES})")
    text = _read_text(path) if suffix in TEXT_SUFFIXES else ""
    if suffix == ".txt":
        rows = []
        for no, line in enumerate(_lines(text), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                rows.append((no, {"concept": line}))  # stripped later, after the control check
        return rows, "line"
    if suffix == ".jsonl":
        rows = []
        for no, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            if hit := control_char(line):  # raw, so invalid JSON anyway: say which character
                record = {"__error__": f"control character {_named(hit[1])} at character {hit[0]} (invalid JSON)"}
            else:
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
    table = pq.read_table(path)
    return [(i + 1, r) for i, r in enumerate(table.to_pylist())], "row"


def _control_in_record(record: dict) -> str | None:
    """"field 'x' has control character U+0000 at character 5" for the first text field
    (the concept first, then the other columns, inside lists and structs too) holding one."""

    def find(value) -> tuple[int, str] | None:
        if isinstance(value, str):
            return control_char(value)
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        for item in items:
            if hit := find(item):
                return hit
        return None

    keys = ["concept"] * ("concept" in record) + [k for k in record if k != "concept"]
    for key in keys:
        if hit := find(record[key]):
            return f"field {escape_controls(str(key))!r} has control character {_named(hit[1])} at character {hit[0]}"
    for key in record:  # a column name can hold one too (a CSV header, a Parquet field)
        if hit := control_char(str(key)):
            return f"column name {escape_controls(str(key))!r} has control character {_named(hit[1])} at character {hit[0]}"
    return None


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
    except (OSError, pa.ArrowException) as e:
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
        elif control := _control_in_record(record):
            error = f"{where}: {control} (only tab is allowed)"
        if error:
            raw_text = escape_controls(str(value)[:200])
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
