"""Safe names for files the site writes: whatever a title holds, the name stays inside.

A slug is ``[a-z0-9-]`` only, never empty, never ``.``/``..``, never longer than
``MAX_SLUG``; nothing a model writes can turn it into a path.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

MAX_SLUG = 60
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")
# the media a page may link, by extension (what the site copies and the player plays)
AUDIO_TYPES = {"ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg", "mp3": "audio/mpeg",
               "flac": "audio/flac", "wav": "audio/wav", "m4a": "audio/mp4"}
IMAGE_EXTS = {"png", "jpg", "jpeg", "webp", "gif"}


def slugify(text: object, fallback: str = "item", max_len: int = MAX_SLUG) -> str:
    """``"Été à Paris!"`` -> ``"ete-a-paris"``; text with no latin letters -> ``fallback``."""
    ascii_text = unicodedata.normalize("NFKD", str(text or "")).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        slug = slug[:max_len].rsplit("-", 1)[0] or slug[:max_len]
    return slug.strip("-") or fallback


def safe_id(value: object) -> str:
    """An id as a file name: itself when already safe (hex hashes are), else a short hash."""
    text = str(value)
    if _SAFE_ID.match(text):
        return text
    return "x" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:15]


def album_slug(title: object, album_id: object) -> str:
    """Readable and unique: the title's slug, then the album id (unique per album)."""
    return f"{slugify(title, fallback='album', max_len=40)}-{safe_id(album_id)}"


def safe_ext(path: object, default: str = "bin") -> str:
    """The lower-case extension of a path, if it is a plain short one."""
    ext = Path(str(path)).suffix.lower().lstrip(".")
    return ext if _SAFE_EXT.match(ext) else default


def resolve_inside(root: Path, relative: object) -> Path | None:
    """``root / relative`` resolved, or None when it would leave ``root`` (``..``, absolute
    paths, symlinks pointing out) or is not a plain relative path string."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    rel = Path(relative)
    if rel.is_absolute():
        return None
    root = Path(root).resolve()
    target = (root / rel).resolve()
    return target if target.is_relative_to(root) and target != root else None
