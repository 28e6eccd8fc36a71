"""Tags and the embedded cover, written into an album's audio files once the album is done.

The cover is drawn by the ImageActor, after the MusicActor has encoded the tracks, so
tagging is a separate cheap CPU step the driver runs per finished album::

    errors = tag_album(out, album_row, track_rows)   # rows as written to the manifests

Per format (mutagen): OGG/Vorbis comments with the cover as a base64 FLAC Picture block
(METADATA_BLOCK_PICTURE); MP3 and WAV ID3v2.3 (TIT2, TPE1, TPE2, TALB, TRCK, TYER, TCON, APIC);
FLAC Vorbis comments and ``add_picture``. Existing tags are replaced, so tagging again
(a re-run) gives the same files. Each file is tagged on a copy that then replaces it, so a
reader never sees a half-written file (on object storage: a local copy, tagged, then
uploaded whole). A file that cannot be tagged is reported, not raised.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path, PurePosixPath

from albumforge.atomic import WriteError, temp_name
from albumforge.rows import STATUS_OK
from albumforge.storage import as_store

COVER_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
FRONT_COVER = 3  # APIC / FLAC picture type


def _picture(cover: Path | None):
    """A mutagen FLAC ``Picture`` of the cover file (the form OGG and FLAC embed), or None."""
    if cover is None:
        return None
    from mutagen.flac import Picture

    pic = Picture()
    pic.type = FRONT_COVER
    pic.mime = COVER_MIME.get(cover.suffix.lower(), "image/png")
    pic.desc = "Front cover"
    pic.data = cover.read_bytes()
    try:
        from PIL import Image

        with Image.open(cover) as im:
            pic.width, pic.height = im.size
            pic.depth = 8 * len(im.getbands())
    except Exception:  # sizes are advisory; players read the image itself
        pass
    return pic


def _vorbis_comments(f, t: dict) -> None:
    f.clear()  # OGG/FLAC comments: replace, never append
    for key, value in t.items():
        if value:
            f[key] = [str(v) for v in value] if isinstance(value, list) else str(value)


def _tag_ogg(path: Path, t: dict, pic) -> None:
    from mutagen.oggvorbis import OggVorbis

    f = OggVorbis(path)
    _vorbis_comments(f, t)
    if pic is not None:
        f["METADATA_BLOCK_PICTURE"] = base64.b64encode(pic.write()).decode("ascii")
    f.save()


def _tag_flac(path: Path, t: dict, pic) -> None:
    from mutagen.flac import FLAC

    f = FLAC(path)
    _vorbis_comments(f, t)
    f.clear_pictures()
    if pic is not None:
        f.add_picture(pic)
    f.save()


def _id3(t: dict, pic):
    from mutagen.id3 import APIC, ID3, TALB, TCON, TDRC, TIT2, TPE1, TPE2, TRCK

    tags = ID3()
    tags.add(TIT2(encoding=3, text=t["TITLE"]))
    tags.add(TPE1(encoding=3, text=t["ARTIST"]))
    tags.add(TPE2(encoding=3, text=t["ALBUMARTIST"]))
    tags.add(TALB(encoding=3, text=t["ALBUM"]))
    tags.add(TRCK(encoding=3, text=f"{t['TRACKNUMBER']}/{t['TRACKTOTAL']}"))
    tags.add(TDRC(encoding=3, text=t["DATE"]))  # saved as TYER in v2.3
    if t["GENRE"]:
        tags.add(TCON(encoding=3, text=t["GENRE"]))
    if pic is not None:
        tags.add(APIC(encoding=3, mime=pic.mime, type=FRONT_COVER, desc=pic.desc, data=pic.data))
    return tags


def _tag_mp3(path: Path, t: dict, pic) -> None:
    _id3(t, pic).save(path, v2_version=3)  # v2.3: what every player reads


def _tag_wav(path: Path, t: dict, pic) -> None:
    from mutagen.wave import WAVE

    f = WAVE(path)
    if f.tags is None:
        f.add_tags()
    f.tags.clear()
    for frame in _id3(t, pic).values():
        f.tags.add(frame)
    f.save(v2_version=3)


TAGGERS = {".ogg": _tag_ogg, ".flac": _tag_flac, ".mp3": _tag_mp3, ".wav": _tag_wav}


def _year(album_row: dict) -> str:
    if album_row.get("year"):
        return str(album_row["year"])
    when = album_row.get("finished_at")
    return str(when.year if isinstance(when, datetime) else datetime.now().year)


def _paths(row: dict) -> list[str]:
    paths = row.get("paths")
    if isinstance(paths, str):
        paths = paths.split("|")
    return [p for p in (paths or [row.get("path")]) if p]


def track_tags(album_row: dict, track_row: dict, total: int) -> dict:
    """The Vorbis-comment names and values of one track (ID3 frames are mapped from them)."""
    genres = album_row.get("genres")
    return {
        "TITLE": track_row.get("title") or f"Track {int(track_row['track_no'])}",
        "ARTIST": album_row.get("artist") or "",
        "ALBUMARTIST": album_row.get("artist") or "",
        "ALBUM": album_row.get("title") or "",
        "TRACKNUMBER": str(int(track_row["track_no"])),
        "TRACKTOTAL": str(total),
        "DATE": _year(album_row),
        "GENRE": [str(g) for g in genres] if genres is not None and len(genres) else [],
    }


def _cover_picture(store, cover_rel, spool: Path):
    """The album's cover as a Picture (None when it has none or the file is gone)."""
    if not cover_rel or not store.is_file(cover_rel):
        return None
    if store.local:
        return _picture(store.local_path(cover_rel))
    local = spool / PurePosixPath(cover_rel).name
    store.download(cover_rel, local)
    return _picture(local)


def _tag_local(path: Path, tagger, t: dict, pic) -> str | None:
    tmp = temp_name(path)  # unique per writer (albumforge.atomic)
    try:
        shutil.copyfile(path, tmp)
        tagger(tmp, t, pic)
        os.replace(tmp, path)
    except Exception as e:  # one bad file must not stop the album
        tmp.unlink(missing_ok=True)
        return f"{type(e).__name__}: {e}"
    return None


def _tag_remote(store, rel: str, tagger, t: dict, pic) -> str | None:
    try:
        with store.writing(rel) as tmp:  # a local copy, tagged, then uploaded whole
            store.download(rel, tmp)
            tagger(tmp, t, pic)
    except WriteError as e:
        return f"{type(e.cause).__name__}: {e.cause}"
    return None


def tag_album(out, album_row: dict, track_rows: list[dict]) -> list[str]:
    """Tag every audio file of the album's ok tracks and embed the cover (when the album
    row has a ``cover_path`` that exists). Paths in the rows are relative to ``out``.

    ``album_row`` needs title, artist; uses genres, cover_path, and year (or the year of
    finished_at, else this year). ``track_rows`` need track_no, title, status and paths (a
    list or a "|"-joined string) or path. Returns one message per file that could not be
    tagged (the file itself is left as it was)."""
    store = as_store(out)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="albumforge-tags-") as spool:
        try:
            pic = _cover_picture(store, album_row.get("cover_path"), Path(spool))
        except (OSError, ValueError) as e:
            errors.append(f"cover {album_row.get('cover_path')}: {e}")
            pic = None
    total = int(album_row.get("n_tracks") or len(track_rows))
    for row in track_rows:
        if row.get("status") != STATUS_OK:
            continue
        t = track_tags(album_row, row, total)
        for rel in _paths(row):
            tagger = TAGGERS.get(PurePosixPath(rel).suffix.lower())
            if tagger is None:
                errors.append(f"{rel}: no tagger for {PurePosixPath(rel).suffix!r}")
                continue
            problem = _tag_local(store.local_path(rel), tagger, t, pic) if store.local else \
                _tag_remote(store, rel, tagger, t, pic)
            if problem:
                errors.append(f"{rel}: {problem}")
    return errors
