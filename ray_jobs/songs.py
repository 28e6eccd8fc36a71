"""Songs in: a folder of audio files (recursive) or a list file, each song with a stable id.

``read_songs(src, max_minutes)`` returns ``(songs, rejected)``:

- a folder: every ``.mp3 .ogg .opus .flac .wav .m4a`` below it, in sorted order;
- a list file: ``.txt`` (one path a line, ``#`` comments), ``.csv``, ``.jsonl`` or
  ``.parquet`` with a ``path`` column; other columns are extra inputs (title, artist,
  genre, ...) that win over the file's own tags. Relative paths are relative to the list.

Each song's ``song_id`` is a hash of the file's bytes: the same file under two names is one
song (the second name is kept in ``duplicates``). Tags are read with mutagen: title,
artist, album, genre, year, and lyrics (ID3 ``USLT``, Vorbis ``LYRICS`` /
``UNSYNCEDLYRICS``, MP4 ``©lyr``), which are used instead of transcribing.

A file that cannot be a song (missing, empty, not audio mutagen can read, longer than
``max_minutes``) is a ``Rejected`` row naming the file and the reason; the others go on.
Imports mutagen and pyarrow only (no torch, no Ray).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

AUDIO_EXTS = (".mp3", ".ogg", ".opus", ".flac", ".wav", ".m4a")
LIST_EXTS = (".txt", ".csv", ".jsonl", ".parquet")
TAG_NAMES = ("title", "artist", "album", "genre", "year")
MAX_TAG_CHARS = 300  # one tag value (hostile or broken tags are cut, never trusted)
MAX_LYRICS_TAG_CHARS = 20_000


class SongsError(ValueError):
    """The songs source itself is unusable (no such folder, a list without a path column)."""


@dataclass
class Song:
    song_id: str
    path: str  # absolute path of the file read
    source: str  # where it was named: "songs/a.mp3" or "list.csv:3"
    size: int
    duration_s: float | None  # from the container header (mutagen); None when unknown
    tags: dict = field(default_factory=dict)  # title, artist, album, genre, year (strings, may be empty)
    lyrics: str | None = None  # from a lyrics tag
    lyrics_source: str | None = None  # "tag:USLT", "tag:LYRICS", ...
    inputs: dict = field(default_factory=dict)  # a list file's extra columns
    duplicates: list[str] = field(default_factory=list)  # other paths with the same bytes

    def meta(self, name: str) -> str:
        """An input column when given, else the file's tag ("" when neither)."""
        value = self.inputs.get(name)
        if value not in (None, ""):
            return str(value).strip()
        value = str(self.tags.get(name) or "")
        return value or (Path(self.path).stem if name == "title" else "")  # no title tag: the file's name


@dataclass
class Rejected:
    song_id: str
    path: str
    source: str
    error: str
    inputs: dict = field(default_factory=dict)


def content_id(path: Path, chunk: int = 1 << 20) -> str:
    """The song id: the first 16 hex digits of the SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _name_id(text: str) -> str:
    """An id for a path that cannot be read (so its failed row has a stable name)."""
    return "x" + hashlib.sha256(text.encode()).hexdigest()[:15]


# ---------------------------------------------------------------- what to read
def _entries(src: Path) -> list[tuple[Path, str, dict]]:
    """(path, source, extra inputs) for every song the source names."""
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTS
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        return [(p, str(p.relative_to(src.parent)), {}) for p in files]
    if not src.is_file():
        raise SongsError(f"songs={str(src)!r}: no such file or folder")
    ext = src.suffix.lower()
    if ext in AUDIO_EXTS:
        return [(src, src.name, {})]
    if ext not in LIST_EXTS:
        raise SongsError(f"songs={str(src)!r}: expected a folder, an audio file ({', '.join(AUDIO_EXTS)}) "
                         f"or a list ({', '.join(LIST_EXTS)})")
    rows = _list_rows(src, ext)
    out = []
    for no, row in rows:
        raw = row.pop("path", None)
        if raw in (None, ""):
            out.append((None, f"{src.name}:{no}", row))
            continue
        p = Path(str(raw)).expanduser()
        out.append((p if p.is_absolute() else src.parent / p, f"{src.name}:{no}", row))
    return out


def _list_rows(src: Path, ext: str) -> list[tuple[int, dict]]:
    if ext == ".txt":
        return [(no, {"path": line.strip()}) for no, line in enumerate(src.read_text().splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
    if ext == ".csv":
        with open(src, newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise SongsError(f"songs={str(src)!r}: no 'path' column (columns: {reader.fieldnames})")
            return [(no, dict(r)) for no, r in enumerate(reader, 2)]
    if ext == ".jsonl":
        rows = []
        for no, line in enumerate(src.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise SongsError(f"songs={str(src)!r} line {no}: not JSON ({e})") from None
            if not isinstance(obj, dict):
                raise SongsError(f"songs={str(src)!r} line {no}: expected a JSON object")
            rows.append((no, obj))
        return rows
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if "path" not in table.column_names:
        raise SongsError(f"songs={str(src)!r}: no 'path' column (columns: {table.column_names})")
    return [(no, r) for no, r in enumerate(table.to_pylist(), 1)]


# ---------------------------------------------------------------- tags
def _text(value, limit: int = MAX_TAG_CHARS) -> str:
    """One tag value as plain text: the first of a list, control characters removed, cut."""
    value = getattr(value, "text", value)  # an ID3 frame holds its values in .text
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    text = "".join(c if c.isprintable() or c in "\n\t" else " " for c in str(value)).strip()
    return text[:limit]


def read_tags(path: Path) -> tuple[dict, str | None, str | None, float | None]:
    """(tags, lyrics, lyrics source, duration) from the file's container; raises ValueError
    when mutagen cannot read it as audio."""
    import mutagen

    try:
        f = mutagen.File(path)
    except Exception as e:  # mutagen raises its own error per format
        raise ValueError(f"not readable audio ({type(e).__name__}: {e})") from None
    if f is None:
        raise ValueError("not an audio file (mutagen recognises no audio format in it)")
    length = getattr(getattr(f, "info", None), "length", None)
    tags: dict = {k: "" for k in TAG_NAMES}
    lyrics = source = None
    t = f.tags
    if t is None:
        return tags, None, None, length
    if hasattr(t, "getall"):  # ID3 (mp3, wav)
        for name, frame in (("title", "TIT2"), ("artist", "TPE1"), ("album", "TALB"), ("genre", "TCON"),
                            ("year", "TDRC")):
            frames = t.getall(frame)
            if frames:
                tags[name] = _text(frames[0])
        uslt = [fr for fr in t.getall("USLT") if str(fr.text).strip()]
        if uslt:
            lyrics, source = str(uslt[0].text), "tag:USLT"
    elif type(t).__name__ == "MP4Tags":
        for name, key in (("title", "\xa9nam"), ("artist", "\xa9ART"), ("album", "\xa9alb"), ("genre", "\xa9gen"),
                          ("year", "\xa9day")):
            if key in t:
                tags[name] = _text(t[key])
        if "\xa9lyr" in t and str(t["\xa9lyr"][0]).strip():
            lyrics, source = str(t["\xa9lyr"][0]), "tag:\xa9lyr"
    else:  # Vorbis comments (ogg, opus, flac)
        for name, keys in (("title", ("title",)), ("artist", ("artist",)), ("album", ("album",)),
                           ("genre", ("genre",)), ("year", ("date", "year"))):
            for key in keys:
                if key in t and t[key]:
                    tags[name] = _text(t[key])
                    break
        for key in ("lyrics", "unsyncedlyrics"):
            if key in t and t[key] and str(t[key][0]).strip():
                lyrics, source = str(t[key][0]), f"tag:{key.upper()}"
                break
    if lyrics is not None:
        lyrics = _text(lyrics, MAX_LYRICS_TAG_CHARS)
    return tags, lyrics or None, source if lyrics else None, length


# ---------------------------------------------------------------- the whole source
def read_songs(src: Path, max_minutes: float | None = None) -> tuple[list[Song], list[Rejected]]:
    """Every song the source names, deduplicated by content; bad ones as ``Rejected``."""
    src = Path(src)
    songs: dict[str, Song] = {}
    rejected: list[Rejected] = []
    for path, source, inputs in _entries(src):
        if path is None:
            rejected.append(Rejected(_name_id(source), "", source, "the row has no path", inputs))
            continue
        shown = str(path)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise IsADirectoryError("not a file")
            song_id = content_id(path)
        except OSError as e:
            rejected.append(Rejected(_name_id(shown), shown, source,
                                     f"{shown}: cannot read it ({e.strerror or e})", inputs))
            continue
        if song_id in songs:  # the same bytes again: one song, the other name kept
            songs[song_id].duplicates.append(shown)
            log.info("%s: same content as %s (song %s): not done twice", shown, songs[song_id].path, song_id)
            continue
        if size == 0:
            rejected.append(Rejected(song_id, shown, source, f"{shown}: the file is empty", inputs))
            continue
        try:
            tags, lyrics, lyrics_source, length = read_tags(path)
        except ValueError as e:
            rejected.append(Rejected(song_id, shown, source, f"{shown}: {e}", inputs))
            continue
        if max_minutes is not None and length is not None and length > max_minutes * 60:
            rejected.append(Rejected(song_id, shown, source,
                                     f"{shown}: {length / 60:.1f} minutes is longer than --max-minutes "
                                     f"{max_minutes:g}", inputs))
            continue
        songs[song_id] = Song(song_id, str(path.resolve()), source, size, length, tags, lyrics, lyrics_source,
                              {k: v for k, v in inputs.items() if isinstance(k, str)})
    if not songs and not rejected:
        raise SongsError(f"songs={str(src)!r}: no audio files ({', '.join(AUDIO_EXTS)}) found")
    return list(songs.values()), rejected
