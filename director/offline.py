"""The offline director: a valid, varied AlbumPlan from a concept with no network.

Deterministic for a given album_id (its RNG is seeded from it). Word banks live in
``prompts/offline/vocab.yaml`` and the prompt shapes in ``prompts/offline/*.j2``.

Titles and artists take words of the concept, never one that says nothing (the
``stop_words`` of vocab.yaml: function words, "concept", "album", markup) and never
markup (tags, script blocks, entities and URLs are removed first). The templates get
the concept as that plain text, cut to 300 characters.
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING

import yaml

from director.schema import AlbumPlan
from director.templates import PROMPTS_DIR, environment, render

if TYPE_CHECKING:  # the section type only: director/ does not import the driver
    from albumforge.config import PlanConfig

_PALETTES = ["amber and teal", "indigo and gold", "pastel pink and mint", "charcoal and neon red",
             "sepia", "emerald and ivory", "cobalt and silver", "rust and cream"]
_CODE = re.compile(r"<(script|style)\b.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)  # with what they hold
_TAG = re.compile(r"</?[A-Za-z!][^<>]*>|</?[A-Za-z!]\S*")  # a tag; an unclosed one to the next space
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);?")
_URL = re.compile(r"\b(?:https?://|www\.)\S*", re.IGNORECASE)


def plain_text(text: str) -> str:
    """The concept without markup: no script/style blocks, tags, entities or URLs."""
    for rx in (_CODE, _TAG, _ENTITY, _URL):
        text = rx.sub(" ", text)
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut).rstrip(" ,;:")


def name_words(text: str, stop: set[str]) -> list[str]:
    """Words of a concept fit to name a title or an artist: letters only, 3 to 24 of them,
    none that says nothing (``stop``: function words, generic words, markup), in order,
    once each."""
    words = re.findall(r"(?<![A-Za-z])[A-Za-z]{3,24}(?![A-Za-z])", plain_text(text))
    return list(dict.fromkeys(w.capitalize() for w in words if w.lower() not in stop))


class OfflineDirector:
    name = "offline"
    model = None

    def __init__(self, plan: "PlanConfig"):
        """``plan``: the run's plan section (templates folder, tracks, seconds, lyrics)."""
        self.env = environment(plan.prompts_dir)
        self.vocab = yaml.safe_load((PROMPTS_DIR / "offline" / "vocab.yaml").read_text())
        self.stop = {str(w).lower() for w in self.vocab["stop_words"]}
        self.tracks_per_album = plan.tracks_per_album
        self.track_seconds = plan.track_seconds
        self.lyrics = plan.lyrics

    def _family(self, text: str, rng: random.Random) -> dict:
        words = set(re.findall(r"[a-z]+", text.lower()))
        for fam in self.vocab["families"].values():
            if words & set(fam["keywords"]):
                return fam
        return rng.choice(list(self.vocab["families"].values()))

    def plan(self, album_id: str, concept: str, inputs: dict) -> tuple[AlbumPlan, dict]:
        t0 = time.perf_counter()
        rng = random.Random(album_id)
        v = self.vocab
        fam = self._family(" ".join([concept, *map(str, inputs.values())]), rng)
        mood = str(inputs.get("mood") or rng.choice(v["moods"]))
        genres = list(dict.fromkeys([*([str(inputs["genre"])] if inputs.get("genre") else []), *fam["genres"]]))[:3]
        instruments = rng.sample(fam["instruments"], k=min(4, len(fam["instruments"])))
        lo, hi = fam["tempo"]
        nouns = name_words(concept, self.stop) or [rng.choice(v["fallback_nouns"])]
        # the prompts quote the concept as plain text, short enough for every field's limit
        about = clip(plain_text(concept) or " ".join(concept.split()), 300)
        n_tracks = int(inputs.get("track_count") or self.tracks_per_album)
        style = rng.choice(v["visual_styles"])

        def name(forms):
            return rng.choice(forms).format(word=rng.choice(v["title_words"]), noun=rng.choice(nouns))

        tracks = []
        for k in range(n_tracks):
            theme = rng.choice(nouns).lower()
            track_mood = rng.choice([mood, *v["moods"]])
            bpm = rng.randint(lo, hi)
            tracks.append(
                dict(
                    title=name(v["title_forms"]),
                    tempo_bpm=bpm,
                    music_prompt=render(
                        self.env, "offline/music_prompt.j2", mood=track_mood, genre=genres[k % len(genres)],
                        bpm=bpm, instruments=rng.sample(instruments, k=min(3, len(instruments))),
                        production=fam["production"], theme=theme,
                    ),
                    visual_prompt=render(
                        self.env, "offline/visual_prompt.j2", style=style, scene=f"{theme}, {clip(about, 120)}",
                        mood=track_mood, palette=rng.choice(_PALETTES),
                    ),
                    duration_s=float(self.track_seconds),
                    lyrics=None,
                )
            )
        title = str(inputs.get("title") or name(v["title_forms"]))
        artist = str(inputs.get("artist") or name(v["artist_forms"]))
        variables = dict(concept=about, inputs=inputs, title=title, artist=artist, tracks=tracks,
                         genres=genres, instruments=instruments, tempo_min=lo, tempo_max=hi, mood=mood, style=style)
        plan = AlbumPlan.model_validate(
            dict(
                title=title,
                artist=artist,
                liner_notes=render(self.env, "offline/liner_notes.j2", **variables),
                soundscape=dict(genres=genres, instruments=instruments, tempo_min_bpm=lo, tempo_max_bpm=hi,
                                production=fam["production"], cultural_elements=[], instrumental=True),
                cover_prompt=render(self.env, "offline/cover_prompt.j2", **variables),
                tracks=tracks,
            )
        )
        meta = dict(director="offline", model=None, attempts=1, tokens_in=0, tokens_out=0,
                    seconds=time.perf_counter() - t0, messages=[], answers=[])
        return plan, meta
