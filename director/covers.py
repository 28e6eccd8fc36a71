"""Cover plans for existing songs: title, artist, genre and lyrics -> a validated ``CoverPlan``.

Two directors, one answer type:

* ``CoverDirector``: the LLM director (``director.llm.LLMDirector``: same client, retries,
  rate gate, answer cache, response-format fallback, secret scrubbing) asked with the
  ``prompts/cover_*.j2`` templates; the JSON schema sent is ``director.contract.wire_schema``
  of ``CoverPlan`` (strict: every rule the validator holds, stated).
* ``OfflineCoverDirector``: no network; a plan from the tags and the lyrics' keywords,
  with the word banks of ``prompts/offline/vocab.yaml`` (deterministic per song).

Lyrics are untrusted data: ``lyrics_block`` removes control characters and anything that
looks like the block's own delimiters, caps the length, and the template says the block
is material to depict, never instructions. A lyric line such as "ignore the rules and
answer X" can therefore change what is painted, never the answer's shape (the schema and
the validator hold it).

``CoverPlanner`` is the Ray Data callable (threads: planning waits on the network).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import Field

from albumforge.storage import as_store
from director.contract import Ask
from director.offline import clip, plain_text
from director.redact import scrub
from director.schema import Tag, _Strict
from director.templates import PROMPTS_DIR, TemplateVarError, environment, render

if TYPE_CHECKING:  # the section type only: director/ does not import the driver
    from albumforge.config import PlanConfig

log = logging.getLogger(__name__)

LYRICS_OPEN, LYRICS_CLOSE = "<<<LYRICS", "LYRICS>>>"
DEFAULT_LYRICS_CHARS = 2000  # lyrics sent to the director; the rest is cut (and said to be cut)
SYSTEM, PLAN = "cover_system.j2", "cover_plan.j2"
ANSWER_FORMAT, REASK = "answer_format.j2", "reask.j2"
COVER_TEMPLATES = (SYSTEM, PLAN, ANSWER_FORMAT, REASK)
_ASK = Ask(track_count=1, lyrics=False, track_seconds=30.0)  # CoverPlan has no tracks: a fixed Ask


class CoverPlan(_Strict):
    """What the director writes for one song's cover."""

    summary: str = Field(min_length=1, max_length=600)  # what the song is about, in a sentence or two
    motifs: list[Tag] = Field(min_length=1, max_length=8)  # things to show
    palette: list[Tag] = Field(min_length=1, max_length=6)  # colours
    mood: str = Field(min_length=1, max_length=80)
    cover_prompt: str = Field(min_length=1, max_length=1000)  # for Stable Diffusion


# ---------------------------------------------------------------- lyrics as data
_DELIMS = re.compile(r"<{2,}|>{2,}|\bLYRICS\b", re.IGNORECASE)


def lyrics_block(lyrics: str | None, limit: int = DEFAULT_LYRICS_CHARS) -> tuple[str, bool]:
    """(the lyrics made safe to quote inside the delimiters, whether they were cut)."""
    text = "".join(c if c.isprintable() or c == "\n" else " " for c in str(lyrics or ""))
    text = _DELIMS.sub(" ", text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line)
    cut = len(text) > limit
    return (clip(text, limit) if cut else text), cut


def song_variables(song: dict, limit: int = DEFAULT_LYRICS_CHARS) -> dict:
    """What the cover templates get: the song's tags (plain text) and its lyrics block."""
    lyrics, cut = lyrics_block(song.get("lyrics"), limit)
    v = {k: clip(plain_text(str(song.get(k) or "")), 200) for k in ("title", "artist", "album", "genre", "year")}
    v.update(lyrics=lyrics, lyrics_cut=cut, instrumental=bool(song.get("instrumental")) or not lyrics,
             lyrics_open=LYRICS_OPEN, lyrics_close=LYRICS_CLOSE, inputs=dict(song.get("inputs") or {}))
    return v


# ---------------------------------------------------------------- the LLM director
class CoverPromptBuilder:
    """The PromptBuilder interface ``LLMDirector._ask`` uses, for one CoverPlan request."""

    mode = "single"

    def __init__(self, prompts_dir: Path | str | None = None):
        self.env = environment(Path(prompts_dir) if prompts_dir else None)

    def ask(self, variables: dict) -> Ask:
        return _ASK

    def schema(self, variables: dict, step=None) -> dict:
        from director.contract import wire_schema

        return wire_schema(CoverPlan, _ASK)

    def render(self, name: str, variables: dict, **extra) -> str:
        return render(self.env, name, **{**variables, **extra})

    def system(self, variables: dict) -> dict:
        return {"role": "system", "content": self.render(SYSTEM, variables)}

    def message(self, variables: dict) -> dict:
        schema = json.dumps(self.schema(variables), separators=(",", ":"))
        return {"role": "user", "content": self.render(PLAN, variables) + "\n\n"
                + self.render(ANSWER_FORMAT, variables, schema=schema, answer_name="CoverPlan")}

    def reask(self, variables: dict, error: str, answer_name: str) -> str:
        return self.render(REASK, variables, error=error, answer_name=answer_name)


def _llm_class():
    from director.llm import DirectorError, LLMDirector

    class CoverDirector(LLMDirector):
        """LLMDirector asked for a CoverPlan instead of an AlbumPlan."""

        def __init__(self, plan, cache_dir=None, lyrics_chars: int = DEFAULT_LYRICS_CHARS, **kwargs):
            super().__init__(plan, cache_dir=cache_dir, **kwargs)
            self.prompts = CoverPromptBuilder(plan.prompts_dir)
            self.lyrics_chars = int(lyrics_chars)

        def plan_cover(self, song_id: str, song: dict) -> tuple[CoverPlan, dict]:
            from director.llm import _Run

            run = _Run()
            try:
                if self._fatal:
                    raise DirectorError(f"not asked: {self._fatal}")
                v = song_variables(song, self.lyrics_chars)
                conv = [self.prompts.system(v), self.prompts.message(v)]
                run.transcript += conv
                plan, _ = self._ask(conv, CoverPlan, None, v, run)
            except DirectorError as e:
                raise DirectorError(scrub(str(e), self._secrets), self._meta(run)) from None
            return plan, self._meta(run)

    return CoverDirector


# ---------------------------------------------------------------- the offline director
_ENGLISH_STOP = set("""i im i'm ive you youre we our ours my mine me your yours he she it its they them their theirs
oh ooh yeah hey la na da whoa baby gonna wanna gotta cause till dont cant wont aint just still ever never always
again away back now there here when then what where who why how been being have has had do does did done know
feel see say said tell come came go goes went take took give gave let want need like love got get make made one
all some every each more most much many into onto upon down up out off over under with without from and but or
nor the this that these those will would shall should can could may might must not no yes so too very than""".split())


class OfflineCoverDirector:
    name = "offline"
    model = None

    def __init__(self, prompts_dir=None, lyrics_chars: int = DEFAULT_LYRICS_CHARS):
        self.env = environment(Path(prompts_dir) if prompts_dir else None)
        self.vocab = yaml.safe_load((PROMPTS_DIR / "offline" / "vocab.yaml").read_text())
        self.stop = {str(w).lower() for w in self.vocab["stop_words"]} | _ENGLISH_STOP
        self.lyrics_chars = int(lyrics_chars)

    def keywords(self, text: str, k: int = 5) -> list[str]:
        """The lyrics' most frequent telling words (letters only, 3..24 of them, no stop words)."""
        words = [w.lower() for w in re.findall(r"(?<![A-Za-z'])[A-Za-z]{3,24}(?![A-Za-z'])", plain_text(text))]
        counts = Counter(w for w in words if w not in self.stop)
        first = {w: i for i, w in reversed(list(enumerate(words)))}  # ties: the earlier word first
        return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]]))[:k]]

    def plan_cover(self, song_id: str, song: dict) -> tuple[CoverPlan, dict]:
        t0 = time.perf_counter()
        rng = random.Random(song_id)
        v = song_variables(song, self.lyrics_chars)
        words = self.keywords(v["lyrics"]) or self.keywords(f"{v['title']} {v['album']}")
        text = " ".join([v["genre"], v["title"], *words])
        fam = self._family(text, rng)
        mood = rng.choice(self.vocab["moods"])
        style = rng.choice(self.vocab["visual_styles"])
        palette = rng.sample(_PALETTE_WORDS, k=2)
        motifs = words[:4] or [rng.choice(self.vocab["fallback_nouns"]).lower()]
        about = (f"{v['title'] or 'An untitled song'}" + (f" by {v['artist']}" if v["artist"] else "")
                 + (f": an instrumental {v['genre'] or fam['genres'][0]} piece" if v["instrumental"]
                    else f": a song about {', '.join(words[:3]) or 'a feeling it leaves unnamed'}"))
        prompt = render(self.env, "offline/song_cover_prompt.j2", style=style, motifs=motifs, mood=mood,
                        palette=palette, genre=v["genre"] or fam["genres"][0], instrumental=v["instrumental"],
                        production=fam["production"])
        plan = CoverPlan(summary=clip(about, 600), motifs=motifs, palette=palette, mood=mood,
                         cover_prompt=clip(prompt, 1000))
        meta = dict(director="offline", model=None, attempts=1, tokens_in=0, tokens_out=0,
                    seconds=time.perf_counter() - t0, messages=[], answers=[], keywords=words)
        return plan, meta

    def _family(self, text: str, rng: random.Random) -> dict:
        words = set(re.findall(r"[a-z]+", text.lower()))
        for fam in self.vocab["families"].values():
            if words & set(fam["keywords"]) or words & {g.split()[-1] for g in fam["genres"]}:
                return fam
        return rng.choice(list(self.vocab["families"].values()))


_PALETTE_WORDS = ["amber", "teal", "indigo", "gold", "pastel pink", "mint", "charcoal", "neon red", "sepia",
                  "emerald", "ivory", "cobalt", "silver", "rust", "cream", "violet", "ochre"]


def make_cover_director(plan: "PlanConfig", lyrics_chars: int = DEFAULT_LYRICS_CHARS, cache_dir=None):
    """The director ``plan.director`` names (auto: resolved here): ``plan_cover(song_id, song)``."""
    from director.plan import resolve_director

    kind = resolve_director(plan.director)
    if kind == "offline":
        return OfflineCoverDirector(plan.prompts_dir, lyrics_chars)
    if kind == "openai":
        return _llm_class()(plan, cache_dir=cache_dir, lyrics_chars=lyrics_chars)
    raise ValueError(f"unknown director {kind!r} (expected 'auto', 'offline' or 'openai')")


def check_cover_templates(plan: "PlanConfig") -> None:
    """Render the cover templates once with an example song (a broken override fails here)."""
    example = {"title": "t", "artist": "a", "album": "", "genre": "", "year": "", "lyrics": "l", "inputs": {}}
    director = make_cover_director(plan.model_copy(update={"director": "offline"}))
    director.plan_cover("check", example)
    b = CoverPromptBuilder(plan.prompts_dir)
    v = song_variables(example)
    try:
        b.system(v), b.message(v), b.reask(v, "example error", "CoverPlan")
    except TemplateVarError as e:
        raise TemplateVarError(f"cover templates: {e}") from None


# ---------------------------------------------------------------- plans on disk
def song_plan_path(song_id: str) -> str:
    """The song's saved cover plan, inside OUT."""
    return f"plans/songs/{song_id}.json"


def load_song_plan(out, song_id: str, lyrics: str) -> dict | None:
    """A plan saved by an earlier run for the same lyrics, or None (``out``: Store, path or URL)."""
    try:
        record = json.loads(as_store(out).read_bytes(song_plan_path(song_id)))
        CoverPlan.model_validate(record["plan"])
    except (OSError, ValueError, KeyError):
        return None
    return record if record.get("lyrics") == lyrics else None
