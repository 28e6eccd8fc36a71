"""The LLM director's steps: which template asks what, and what shape the answer has.

A plan is five steps, each a jinja2 template in ``prompts/`` (a ``--prompts DIR`` folder
overrides any of them file by file):

  analyse.j2 -> soundscape.j2 -> tracks.j2 -> album.j2 -> refine.j2

plus ``system.j2`` (the system message), ``answer_format.j2`` (the JSON shape to answer)
and ``reask.j2`` (what follows an answer that failed validation). The JSON schema of each
request is built per row by ``director.contract.wire_schema`` (exact track count, lyrics
when asked, tempo as ``tempo_bpm``, ...).

Two ways to ask (``plan.steps``):
  single  one request per album: the five steps rendered in order into one message, the
          answer is the whole ``AlbumPlan`` (cheap and fast: the default)
  chain   one request per step, as one conversation; each answer is validated into its
          step's model before the next step is asked (more tokens, more control)

Variables every template gets (see ``PromptBuilder.variables``):
  concept, inputs (dict of the row's extra inputs), track_count, track_seconds, lyrics,
  mode ("single" | "chain"), step (the template's step name), and every extra input as a
  top-level variable as well (a guaranteed name wins over an input of the same name; the
  input stays in ``inputs``). answer_format.j2 also gets ``schema`` and ``answer_name``;
  reask.j2 gets ``error`` and ``answer_name``. Optional inputs are tested with
  ``inputs.get("mood")`` or ``{% if mood is defined %}``; a bare ``{{ mood }}`` on a row
  without a mood is a ``TemplateVarError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from pydantic import BaseModel

from director.contract import Ask, wire_schema
from director.schema import (
    AlbumFrame,
    AlbumPlan,
    ConceptAnalysis,
    Soundscape,
    TrackList,
)
from director.templates import TemplateVarError, environment

MAX_TRACKS = 30


@dataclass(frozen=True)
class Step:
    name: str
    template: str
    answer: type[BaseModel]  # what this step answers in chain mode


STEPS: tuple[Step, ...] = (
    Step("analyse", "analyse.j2", ConceptAnalysis),
    Step("soundscape", "soundscape.j2", Soundscape),
    Step("tracks", "tracks.j2", TrackList),
    Step("album", "album.j2", AlbumFrame),
    Step("refine", "refine.j2", AlbumPlan),
)
SYSTEM, ANSWER_FORMAT, REASK = "system.j2", "answer_format.j2", "reask.j2"
ALL_TEMPLATES = (SYSTEM, *(s.template for s in STEPS), ANSWER_FORMAT, REASK)
GUARANTEED = ("concept", "inputs", "track_count", "track_seconds", "lyrics", "mode", "step")

def track_count_of(inputs: dict, default: int) -> int:
    """The row's ``track_count`` input when given (1..30), else the configured default."""
    raw = inputs.get("track_count")
    if raw is None or raw == "":
        return int(default)
    try:
        n = int(float(str(raw).strip()))
    except ValueError:
        raise ValueError(f"input track_count={raw!r} is not a whole number") from None
    if not 1 <= n <= MAX_TRACKS:
        raise ValueError(f"input track_count={raw!r} is outside 1..{MAX_TRACKS}")
    return n


_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


class PromptBuilder:
    """Renders the step templates for one concept row into chat messages."""

    def __init__(self, prompts_dir: Path | str | None = None, mode: str = "single",
                 tracks_per_album: int = 8, track_seconds: float = 30.0, lyrics: bool = False):
        if mode not in ("single", "chain"):
            raise ValueError(f"plan.steps={mode!r}: expected 'single' or 'chain'")
        self.env = environment(Path(prompts_dir) if prompts_dir else None)
        self.mode = mode
        self.tracks_per_album = tracks_per_album
        self.track_seconds = track_seconds
        self.lyrics = lyrics

    def ask(self, variables: dict) -> Ask:
        """What a row's requests ask beyond the step models (it shapes their schemas)."""
        return Ask(int(variables["track_count"]), bool(self.lyrics), float(self.track_seconds))

    def schema(self, variables: dict, step: Step | None) -> dict:
        """The JSON schema sent with a request for ``step`` (None: the single-mode AlbumPlan)."""
        return wire_schema(step.answer if step else AlbumPlan, self.ask(variables))

    def variables(self, concept: str, inputs: dict) -> dict:
        top = {k: v for k, v in inputs.items() if isinstance(k, str) and k.isidentifier()}
        top.update(
            concept=concept, inputs=dict(inputs), track_count=track_count_of(inputs, self.tracks_per_album),
            track_seconds=float(self.track_seconds), lyrics=bool(self.lyrics), mode=self.mode,
        )
        return top

    def render(self, name: str, variables: dict, **extra) -> str:
        step = name.removesuffix(".j2")
        try:
            return self.env.get_template(name).render(**{**variables, "step": step, **extra}).strip()
        except jinja2.UndefinedError as e:
            m = _UNDEFINED.search(e.message or "")
            var = next((g for g in (m.groups() if m else ()) if g), None)
            what = f"variable {var!r}" if var else f"an undefined variable ({e.message})"
            raise TemplateVarError(
                f"template {name!r} uses {what}, which the concept row does not provide "
                f"(row inputs: {', '.join(sorted(variables['inputs'])) or 'none'}; always provided: "
                f"{', '.join(GUARANTEED)})"
            ) from None

    def answer_format(self, variables: dict, step: Step | None) -> str:
        model = step.answer if step else AlbumPlan
        schema = self.schema(variables, step)
        return self.render(ANSWER_FORMAT, variables, schema=json.dumps(schema, separators=(",", ":")),
                           answer_name=model.__name__)

    def reask(self, variables: dict, error: str, answer_name: str) -> str:
        return self.render(REASK, variables, error=error, answer_name=answer_name)

    def system(self, variables: dict) -> dict:
        return {"role": "system", "content": self.render(SYSTEM, variables)}

    def single_message(self, variables: dict) -> dict:
        """single mode: every step in order, then the AlbumPlan answer format."""
        parts = [self.render(s.template, variables) for s in STEPS]
        parts.append(self.answer_format(variables, None))
        return {"role": "user", "content": "\n\n".join(p for p in parts if p)}

    def step_message(self, variables: dict, step: Step) -> dict:
        """chain mode: one step and its answer format."""
        return {"role": "user", "content": self.render(step.template, variables) + "\n\n"
                + self.answer_format(variables, step)}

    def check(self, concept: str, inputs: dict) -> None:
        """Render every template for this row (raises TemplateVarError / ValueError)."""
        v = self.variables(concept, inputs)
        self.system(v)
        if self.mode == "single":
            self.single_message(v)
        else:
            for s in STEPS:
                self.step_message(v, s)
        self.reask(v, "example error", "AlbumPlan")
