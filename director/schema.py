"""The album plan: what the director writes and everything downstream reads.

Every field is validated: the LLM's answer is untrusted, so bad shapes are rejected
here (``extra="forbid"``) and re-asked, never passed on to the GPUs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_CONCEPT_CHARS = 2000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Soundscape(_Strict):
    """The sound shared by every track of the album."""

    genres: list[str] = Field(min_length=1, max_length=6)
    instruments: list[str] = Field(min_length=1, max_length=12)
    tempo_min_bpm: int = Field(ge=30, le=240)
    tempo_max_bpm: int = Field(ge=30, le=240)
    production: str = Field(min_length=1, max_length=400)
    cultural_elements: list[str] = Field(default_factory=list, max_length=8)
    instrumental: bool = True  # MusicGen makes no vocals; lyrics only feed notes and art

    @field_validator("tempo_max_bpm")
    @classmethod
    def _tempo_range(cls, v: int, info) -> int:
        lo = info.data.get("tempo_min_bpm")
        if lo is not None and v < lo:
            raise ValueError(f"tempo_max_bpm={v} is below tempo_min_bpm={lo}")
        return v


class TrackPlan(_Strict):
    title: str = Field(min_length=1, max_length=120)
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
    themes: list[str] = Field(min_length=1, max_length=10)
    moods: list[str] = Field(min_length=1, max_length=8)
    setting: str = Field(min_length=1, max_length=400)
    imagery: list[str] = Field(min_length=1, max_length=12)


class TrackList(_Strict):
    """Step 3: the tracks, in running order."""

    tracks: list[TrackPlan] = Field(min_length=1, max_length=30)


class AlbumFrame(_Strict):
    """Step 4: what frames the tracks: title, persona, notes, cover."""

    title: str = Field(min_length=1, max_length=120)
    artist: str = Field(min_length=1, max_length=120)
    liner_notes: str = Field(min_length=1, max_length=4000)
    cover_prompt: str = Field(min_length=1, max_length=1000)
