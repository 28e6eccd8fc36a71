"""The songs section of the site (``albumforge covers``): rows and media from manifests/songs/.

Every value is untrusted (tags come from the user's files, lyrics from Whisper or a tag):
the template autoescapes and never marks anything safe; media is read only from inside
OUT (``catalog.slugs.resolve_inside``) and named by slugs.
"""

from __future__ import annotations

import unicodedata

from catalog.slugs import AUDIO_TYPES, IMAGE_EXTS, album_slug, safe_ext
from albumforge.manifest import STATUS_OK
from albumforge.parts import read_latest

EXCERPT_LINES = 8  # lyrics lines shown per song
EXCERPT_CHARS = 600


def excerpt(lyrics: str | None) -> str:
    """The first lines of the lyrics, control characters removed (escaped by the template)."""
    if not lyrics:
        return ""
    text = "".join(" " if unicodedata.category(c).startswith("C") and c != "\n" else c for c in lyrics)
    lines = [line.strip() for line in text.splitlines() if line.strip()][:EXCERPT_LINES]
    out = "\n".join(lines)
    return out if len(out) <= EXCERPT_CHARS else out[: EXCERPT_CHARS - 1] + "…"


def song_layout(out, media) -> tuple[list[dict], list[dict]]:
    """(ok songs to show, failed songs) from the songs manifests; ``media`` is the site's
    ``_Media``: ``media(rel, dest, allowed)`` -> (source inside OUT, site path) or None."""
    rows = read_latest(out, "songs").to_pylist()
    rows.sort(key=lambda r: (str(r.get("artist") or "").casefold(), str(r.get("title") or "").casefold(),
                             r["song_id"]))
    shown, failed = [], []
    for r in rows:
        if r["status"] != STATUS_OK:
            failed.append(r)
            continue
        slug = album_slug(r.get("title"), r["song_id"])
        files = []
        cover = media(r.get("cover_path"), f"media/songs/{slug}/cover", IMAGE_EXTS)
        if cover:
            files.append(cover)
        audio = media(r.get("embedded_path"), f"media/songs/{slug}/song", set(AUDIO_TYPES))
        if audio:
            files.append(audio)
        shown.append({"song": r, "slug": slug, "cover": cover[1] if cover else None,
                      "audio": {"src": audio[1], "type": AUDIO_TYPES[safe_ext(audio[1])]} if audio else None,
                      "excerpt": excerpt(r.get("lyrics")), "media": files})
    return shown, failed
