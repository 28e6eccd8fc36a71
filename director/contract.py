"""What the model is asked to write: one JSON schema per request, stating every rule a
JSON schema can state, and the few rules no schema can state (checked after the answer,
and re-asked).

A guided-decoding server (vLLM with xgrammar, OpenAI strict structured outputs) returns
exactly what the request's schema allows and nothing more, so a rule the validator holds
and the schema does not state costs a re-ask at best, and at worst an album that never
plans (the server may keep choosing the same wrong value). Hence:

* ``wire_schema(model, ask)``: the step model's pydantic schema, per request:
  - exact track count (``minItems = maxItems = track_count``);
  - lyrics required (non-blank) when asked, and not asked at all when not;
  - the tempo asked as an integer ``tempo_bpm`` (``MIN_BPM..MAX_BPM``): the director
    writes it into the music prompt as "N bpm" (``with_tempo``), so the model cannot
    forget it;
  - ``duration_s`` within 0.5..1.5 x the asked track length;
  - no field whose only valid value is a constant (``soundscape.instrumental`` is set by
    the director, never asked);
  - in OpenAI's strict subset: every property required, ``additionalProperties: false``
    everywhere, an optional field as ``anyOf [.., null]``, refs inlined, and only the
    keywords strict mode documents (string lengths are written into a ``pattern``,
    which also forbids blank strings: the validator strips whitespace).
* ``CHECKS``: the plan rules the validator holds beyond pydantic, each with the schema
  statement that makes it hold on a guided server (``stated``), or none.
* ``NOT_EXPRESSIBLE``: the rules no JSON schema can state, each with why; they stay as
  re-asks.
* ``unstated(model, ask)``: validator rules that are neither stated by the wire schema
  nor listed in ``NOT_EXPRESSIBLE`` (tests require it empty for every step).
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple

from pydantic import BaseModel

from director.schema import MAX_BPM, AlbumPlan, Soundscape, TrackList, TrackPlan

BPM = re.compile(r"\b\d{2,3}\s*bpm\b", re.IGNORECASE)  # a tempo written in a music prompt
_TEMPO_TEXT = re.compile(r"(?:\b(?:at|around|about|approx\.?|~)\s*)?\b\d{2,3}\s*bpm\b", re.IGNORECASE)


@dataclass(frozen=True)
class Ask:
    """What one request asks for, beyond the step's model: it shapes the schema."""

    track_count: int
    lyrics: bool
    track_seconds: float

    @property
    def duration_range(self) -> tuple[float, float]:
        """Seconds a track may last (the director clamps to it as well)."""
        hi = round(min(900.0, 1.5 * self.track_seconds), 3)
        return min(round(0.5 * self.track_seconds, 3), hi), hi


# ---------------------------------------------------------------- tempo
TEMPO_ROOM = len(f", {MAX_BPM} bpm")  # what with_tempo may add to a music prompt


def _max_len(model: type[BaseModel], field: str) -> int:
    return next(m.max_length for m in model.model_fields[field].metadata if hasattr(m, "max_length"))


MUSIC_PROMPT_MAX = _max_len(TrackPlan, "music_prompt")


def with_tempo(prompt: str, bpm: int) -> str:
    """``prompt`` with its tempo written as "N bpm" after the first clause (the genre),
    replacing any tempo the model wrote in it."""
    tag = f"{int(bpm)} bpm"
    parts = [p.strip() for p in str(prompt).split(",")]
    parts = [p for p in (" ".join(_TEMPO_TEXT.sub(" ", p).split()) for p in parts) if p]
    parts.insert(min(1, len(parts)), tag)
    text = ", ".join(parts)
    if len(text) > MUSIC_PROMPT_MAX:  # only an answer that ignored the schema's length
        head = ", ".join(parts[:2])
        text = head + ", " + ", ".join(parts[2:])[: max(0, MUSIC_PROMPT_MAX - len(head) - 2)]
    return text.rstrip(", ")


def finish_answer(obj: BaseModel) -> BaseModel:
    """What the director writes into an answer: each track's tempo into its music prompt,
    and ``instrumental`` (MusicGen makes no vocals)."""
    tracks = getattr(obj, "tracks", None) or []
    for t in tracks:
        if t.tempo_bpm is not None:
            t.music_prompt = with_tempo(t.music_prompt, t.tempo_bpm)
    sound = obj if isinstance(obj, Soundscape) else getattr(obj, "soundscape", None)
    if isinstance(sound, Soundscape):
        sound.instrumental = True
    return obj


# ---------------------------------------------------------------- plan checks
def _check_track_count(obj, ask: Ask) -> list[str]:
    n = len(obj.tracks)
    return [] if n == ask.track_count else [f"there are {n} tracks but exactly {ask.track_count} were asked for"]


def _check_tempo(obj, ask: Ask) -> list[str]:
    return [f"track {k} gives no tempo (tempo_bpm, or 'N bpm' in its music_prompt)"
            for k, t in enumerate(obj.tracks, 1) if t.tempo_bpm is None and not BPM.search(t.music_prompt)]


def _check_lyrics(obj, ask: Ask) -> list[str]:
    if not ask.lyrics:
        return []
    return [f"track {k} has no lyrics" for k, t in enumerate(obj.tracks, 1) if not (t.lyrics or "").strip()]


def _states_track_count(rules: dict, ask: Ask) -> bool:
    return rules.get("tracks:minItems") == rules.get("tracks:maxItems") == ask.track_count


def _states_tempo(rules: dict, ask: Ask) -> bool:
    return ("tracks[].tempo_bpm:required" in rules and rules.get("tracks[].tempo_bpm:type") == "integer"
            and "tracks[].tempo_bpm:nullable" not in rules)


def _states_lyrics(rules: dict, ask: Ask) -> bool:
    if not ask.lyrics:
        return True  # the check holds nothing then
    return ("tracks[].lyrics:required" in rules and "tracks[].lyrics:nullable" not in rules
            and rules.get("tracks[].lyrics:minLength", 0) >= 1)


class Check(NamedTuple):
    """A plan rule the validator holds beyond pydantic's field rules."""

    name: str
    applies: tuple[type[BaseModel], ...]  # the step answers it checks
    problems: Callable[[BaseModel, Ask], list[str]]  # sentences the model can act on
    stated: Callable[[dict, Ask], bool] | None  # does the wire schema (its rules) make it hold? None: no schema can


CHECKS: tuple[Check, ...] = (
    Check("track_count", (AlbumPlan, TrackList), _check_track_count, _states_track_count),
    Check("tempo", (AlbumPlan, TrackList), _check_tempo, _states_tempo),
    Check("lyrics", (AlbumPlan, TrackList), _check_lyrics, _states_lyrics),
)


def problems(obj: BaseModel, ask: Ask) -> list[str]:
    """Every check's problems with an answer (empty: the answer is a plan)."""
    return [p for c in CHECKS if isinstance(obj, c.applies) for p in c.problems(obj, ask)]


class NotExpressible(NamedTuple):
    name: str  # a validator rule name (see validator_rules)
    why: str


NOT_EXPRESSIBLE: tuple[NotExpressible, ...] = (
    NotExpressible("Soundscape._tempo_range",
                   "tempo_max_bpm >= tempo_min_bpm compares two answered values; JSON schema compares "
                   "a value only with constants"),
)


# ---------------------------------------------------------------- the wire schema
# Keywords OpenAI's strict mode documents (besides structure); everything else is dropped.
STRICT_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
                   "description", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                   "multipleOf", "minItems", "maxItems"}

# (model, field) the model never writes: the director does (lyrics are not asked either when not wanted)
_NOT_ASKED = {("Soundscape", "instrumental")}
_DESCRIBE = {
    ("TrackPlan", "tempo_bpm"): "the track's tempo in bpm, inside the soundscape's tempo range",
    ("TrackPlan", "music_prompt"): "one line for MusicGen; its tempo is added from tempo_bpm as 'N bpm'",
}


def text_pattern(lo: int, hi: int | None) -> str:
    """A regex (anchored, no lookaround) for a string of ``lo``..``hi`` characters with no
    leading or trailing whitespace, so that stripping changes nothing: the validator's
    lengths count the stripped text."""
    if hi is not None and hi < max(lo, 1):
        raise ValueError(f"text_pattern: no string of {lo}..{hi} characters")
    mid = (lambda a, b: f"{{{a},{b}}}" if b is not None else (f"{{{a},}}" if a else "*"))
    if lo >= 2:
        return rf"^\S[\s\S]{mid(lo - 2, None if hi is None else hi - 2)}\S$"
    inner = r"\S" if hi == 1 else rf"\S([\s\S]{mid(0, None if hi is None else hi - 2)}\S)?"
    return f"^{inner}$" if lo == 1 else f"^({inner})?$"


def _inline(schema: dict) -> dict:
    defs = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return walk(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]))
        return {k: walk(v) for k, v in node.items() if k != "$defs"}

    return walk(schema)


def _non_null(node: dict) -> dict:
    """The non-null branch of ``anyOf [X, null]`` (the node itself otherwise)."""
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    return {**branches[0], **{k: v for k, v in node.items() if k in ("description", "title")}} \
        if "anyOf" in node and len(branches) == 1 else node


def wire_schema(model: type[BaseModel], ask: Ask) -> dict:
    """The JSON schema sent for one request (see the module text)."""
    return copy.deepcopy(_wire_schema(model, ask))


@lru_cache(maxsize=256)
def _wire_schema(model: type[BaseModel], ask: Ask) -> dict:
    lo_s, hi_s = ask.duration_range

    def field(owner: str | None, name: str, node: dict) -> dict | None:
        key = (owner, name)
        if key in _NOT_ASKED or (key == ("TrackPlan", "lyrics") and not ask.lyrics):
            return None
        if key in (("TrackPlan", "tempo_bpm"), ("TrackPlan", "lyrics")):
            node = _non_null(node)  # asked: a value, never null
            if name == "lyrics":
                node = {**node, "minLength": 1}
        if key == ("TrackPlan", "music_prompt"):
            node = {**node, "maxLength": node["maxLength"] - TEMPO_ROOM}
        if key == ("TrackPlan", "duration_s"):
            node = {k: v for k, v in node.items() if k not in ("exclusiveMinimum", "minimum", "maximum")}
            node.update(minimum=lo_s, maximum=hi_s)
        if key in _DESCRIBE:
            node = {**node, "description": _DESCRIBE[key]}
        if name == "tracks" and node.get("type") == "array":
            node = {**node, "minItems": ask.track_count, "maxItems": ask.track_count}
        return walk(node)

    def walk(node: dict) -> dict:
        if "anyOf" in node:
            out = {"anyOf": [walk(b) for b in node["anyOf"]]}
            if "description" in node:
                out["description"] = node["description"]
            return out
        kind = node.get("type")
        if kind == "object":
            owner = node.get("title")
            props = {}
            for name, sub in node.get("properties", {}).items():
                w = field(owner, name, sub)
                if w is not None:
                    props[name] = w
            out = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
            if node.get("description"):
                out["description"] = node["description"]
            return out
        if kind == "array":
            out = {k: v for k, v in node.items() if k in STRICT_KEYWORDS and k != "items"}
            out["items"] = walk(node.get("items", {}))
            return out
        if kind == "string":
            out = {k: v for k, v in node.items() if k in STRICT_KEYWORDS and k != "pattern"}
            lo, hi = int(node.get("minLength", 0)), node.get("maxLength")
            if "pattern" in node and (lo or hi is not None):
                raise ValueError(f"wire_schema: a string with a pattern and a length ({node}) needs both in one regex")
            out["pattern"] = node["pattern"] if "pattern" in node else text_pattern(lo, hi)
            return out
        return {k: v for k, v in node.items() if k in STRICT_KEYWORDS}

    return walk(_inline(model.model_json_schema()))


# ---------------------------------------------------------------- rules, read back
def py_regex(pattern: str) -> re.Pattern:
    """A JSON-schema (ECMA-262) pattern as a Python regex: a final ``$`` is the end of the
    text (Python's ``$`` also matches before a final newline)."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern)


def _probe_lengths(pattern: str, limit: int = 100_000) -> tuple[int, int | None, bool]:
    """(min, max, blank ok) of the plain-text strings ``pattern`` accepts: the shortest
    run of letters it takes (up to 64), then the longest, found by doubling and bisecting
    (the lengths a pattern takes are assumed to be one range; ``None``: no maximum)."""
    rx = py_regex(pattern)
    ok = lambda n: rx.search("a" * n) is not None  # noqa: E731
    blank_ok = any(rx.search(s) for s in ("", " ", "  ", "\n"))
    lo = next((n for n in range(65) if ok(n)), None)
    if lo is None:
        return 0, 0, blank_ok
    hi = max(lo, 1)
    while ok(hi * 2):
        hi *= 2
        if hi > limit:
            return lo, None, blank_ok
    top = hi * 2  # ok(hi), not ok(top)
    while top - hi > 1:
        mid = (hi + top) // 2
        hi, top = (mid, top) if ok(mid) else (hi, mid)
    return lo, (hi if ok(hi) else lo), blank_ok


def schema_rules(schema: dict) -> dict[str, object]:
    """Every rule a JSON schema states, by name ``"<path>:<keyword>"`` (path: dotted field
    names, ``[]`` for array items; ``$`` for the root), read back from the schema itself.
    A string ``pattern`` is read as the lengths it allows (``minLength`` counts only
    non-blank text)."""
    rules: dict[str, object] = {}

    def walk(node: dict, path: str) -> None:
        at = path or "$"
        branches = node.get("anyOf")
        if branches:
            if any(b.get("type") == "null" for b in branches):
                rules[f"{at}:nullable"] = True
            for b in branches:
                if b.get("type") != "null":
                    walk(b, path)
            return
        if "type" in node:
            rules[f"{at}:type"] = node["type"]
        for key in ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum",
                    "exclusiveMaximum", "multipleOf", "enum", "const"):
            if key in node:
                rules[f"{at}:{key}"] = node[key]
        if node.get("type") == "string" and "pattern" in node:
            lo, hi, blank_ok = _probe_lengths(node["pattern"])
            rules[f"{at}:pattern"] = node["pattern"]
            lo = 0 if blank_ok else lo
            rules[f"{at}:minLength"] = max(lo, int(node.get("minLength", 0)))
            if hi is not None:
                rules[f"{at}:maxLength"] = min(hi, node.get("maxLength", hi))
        if node.get("additionalProperties") is False:
            rules[f"{at}:no_extra"] = True
        for name, sub in node.get("properties", {}).items():
            sub_path = f"{path}.{name}" if path else name
            rules[f"{sub_path}:present"] = True
            if name in node.get("required", []):
                rules[f"{sub_path}:required"] = True
            walk(sub, sub_path)
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return rules


_RESTRICTIONS = ("required", "no_extra", "minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum",
                 "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "enum", "const", "pattern")


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The model and every model nested in its fields."""
    seen: list[type[BaseModel]] = []

    def visit(tp) -> None:
        if inspect.isclass(tp) and issubclass(tp, BaseModel):
            if tp in seen:
                return
            seen.append(tp)
            for f in tp.model_fields.values():
                visit(f.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(model)
    return seen


def validator_rules(model: type[BaseModel]) -> dict[str, object]:
    """Every rule the validator holds for a step answer, by name: pydantic's field rules
    (``"<path>:<keyword>"``, as ``schema_rules`` reads them from the model's own schema),
    its validator functions (``"<Model>.<function>"``) and the plan checks that apply
    (``"check.<name>"``)."""
    rules = {k: v for k, v in schema_rules(_inline(model.model_json_schema())).items()
             if k.rsplit(":", 1)[1] in _RESTRICTIONS}
    for m in _models(model):
        decorators = m.__pydantic_decorators__
        for name in (*decorators.field_validators, *decorators.model_validators, *decorators.root_validators,
                     *decorators.validators):
            rules[f"{m.__name__}.{name}"] = True
    for c in CHECKS:
        if issubclass(model, c.applies):
            rules[f"check.{c.name}"] = True
    return rules


def _never_asked(path: str, wire: dict[str, object]) -> bool:
    """Whether a field on ``path`` (or one it sits in) is absent from the wire schema while
    its object forbids other properties: the model can never write it."""
    segs = path.split(".") if path != "$" else []
    for i in range(len(segs)):
        field = ".".join(segs[:i] + [segs[i].removesuffix("[]")])
        if f"{field}:present" not in wire:
            parent = ".".join(segs[:i]) or "$"
            return bool(wire.get(f"{parent}:no_extra"))
    return False


def _holds(kind: str, want, got) -> bool:
    """Does a stated value ``got`` hold the validator's rule ``kind`` = ``want``?"""
    if kind in ("minLength", "minItems", "minimum"):
        return got is not None and got >= want
    if kind in ("maxLength", "maxItems", "maximum"):
        return got is not None and got <= want
    return got == want


def stated(name: str, want, wire: dict[str, object], ask: Ask) -> bool:
    """Whether the wire schema (its rules, ``schema_rules``) states the validator rule ``name``."""
    if name.startswith("check."):
        check = next(c for c in CHECKS if c.name == name.removeprefix("check."))
        return check.stated is not None and check.stated(wire, ask)
    if ":" not in name:
        return False  # a validator function: never stated by a schema
    path, kind = name.rsplit(":", 1)
    if kind == "required":  # the field itself must be asked for
        return f"{path}:required" in wire
    if _never_asked(path, wire):
        return True  # a field the model cannot write cannot break a rule
    if kind == "exclusiveMinimum":
        return (wire.get(f"{path}:minimum") is not None and wire[f"{path}:minimum"] > want) or \
            (wire.get(f"{path}:exclusiveMinimum") is not None and wire[f"{path}:exclusiveMinimum"] >= want)
    if kind == "exclusiveMaximum":
        return (wire.get(f"{path}:maximum") is not None and wire[f"{path}:maximum"] < want) or \
            (wire.get(f"{path}:exclusiveMaximum") is not None and wire[f"{path}:exclusiveMaximum"] <= want)
    if kind == "minLength" and want == 0:
        return True
    return _holds(kind, want, wire.get(name))


def unstated(model: type[BaseModel], ask: Ask) -> list[str]:
    """Validator rules for ``model`` that the wire schema for ``ask`` does not state and
    ``NOT_EXPRESSIBLE`` does not list: each one a re-ask waiting to happen."""
    wire = schema_rules(wire_schema(model, ask))
    listed = {n.name for n in NOT_EXPRESSIBLE}
    return sorted(name for name, want in validator_rules(model).items()
                  if name not in listed and not stated(name, want, wire, ask))
