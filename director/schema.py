"""The album plan: what the director writes and everything downstream reads.

Every field is validated: the LLM's answer is untrusted, so bad shapes are rejected
here (``extra="forbid"``) and re-asked, never passed on to the GPUs. What the model is
asked to write (a JSON schema per request, stating these same rules) is built from these
models by ``director.contract``; a rule added here must be stated there or listed there
as one no schema can state (``tests/test_director.py`` checks it).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CONCEPT_CHARS = 2000
MIN_BPM, MAX_BPM = 30, 240

Tag = Annotated[str, Field(min_length=1, max_length=80)]  # one genre, instrument, theme, ...


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Soundscape(_Strict):
    """The sound shared by every track of the album."""

    genres: list[Tag] = Field(min_length=1, max_length=6)
    instruments: list[Tag] = Field(min_length=1, max_length=12)
    tempo_min_bpm: int = Field(ge=MIN_BPM, le=MAX_BPM)
    tempo_max_bpm: int = Field(ge=MIN_BPM, le=MAX_BPM)
    production: str = Field(min_length=1, max_length=400)
    cultural_elements: list[Tag] = Field(default_factory=list, max_length=8)
    # MusicGen makes no vocals; lyrics only feed notes and art. Not asked of the model
    # (a field with one valid value is no question): the director sets it.
    instrumental: bool = True

    @field_validator("tempo_max_bpm")
    @classmethod
    def _tempo_range(cls, v: int, info) -> int:
        lo = info.data.get("tempo_min_bpm")
        if lo is not None and v < lo:
            raise ValueError(f"tempo_max_bpm={v} is below tempo_min_bpm={lo}")
        return v


class TrackPlan(_Strict):
    title: str = Field(min_length=1, max_length=120)
    # the model answers the tempo as a number; the director writes it into music_prompt
    # as "N bpm" (director.contract.with_tempo). None in plans made before it existed.
    tempo_bpm: int | None = Field(default=None, ge=MIN_BPM, le=MAX_BPM)
    music_prompt: str = Field(min_length=1, max_length=1000)
    visual_prompt: str = Field(min_length=1, max_length=1000)
    duration_s: float = Field(gt=0, le=900)
    lyrics: str | None = Field(default=None, max_length=4000)


class AlbumPlan(_Strict):
    title: str = Field(min_length=1, max_length=120)
    artist: str = Field(min_length=1, max_length=120)
    liner_notes: str = Field(min_length=1, max_length=4000)
    soundscape: Soundscape
    cover_prompt: str = Field(min_length=1, max_length=1000)
    tracks: list[TrackPlan] = Field(min_length=1, max_length=30)


# ---------------------------------------------------------------- LLM step answers
# The chained director ("plan.steps = chain") asks one question per step; each answer
# is validated into one of these before the next step is asked. The last step (refine)
# answers a whole AlbumPlan.


class ConceptAnalysis(_Strict):
    """Step 1: what the concept is about, before any sound or image is decided."""

    summary: str = Field(min_length=1, max_length=800)
    themes: list[Tag] = Field(min_length=1, max_length=10)
    moods: list[Tag] = Field(min_length=1, max_length=8)
    setting: str = Field(min_length=1, max_length=400)
    imagery: list[Tag] = Field(min_length=1, max_length=12)


class TrackList(_Strict):
    """Step 3: the tracks, in running order."""

    tracks: list[TrackPlan] = Field(min_length=1, max_length=30)


class AlbumFrame(_Strict):
    """Step 4: what frames the tracks: title, persona, notes, cover."""

    title: str = Field(min_length=1, max_length=120)
    artist: str = Field(min_length=1, max_length=120)
    liner_notes: str = Field(min_length=1, max_length=4000)
    cover_prompt: str = Field(min_length=1, max_length=1000)
