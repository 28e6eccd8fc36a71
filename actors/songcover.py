"""Song covers: the ImageActor writing into ``media/songs/<song_id>/``, and the embedded copy.

``SongCoverActor`` is ``actors.image.ImageActor`` unchanged (house style, LoRA, hires,
CLIP score, crash guard, item records) except for the folder its images go to.

``embed_copy(out, song_path, song_id, cover_rel)`` copies the user's song into
``OUT/media/songs/<song_id>/song.<ext>`` and embeds the cover into the copy, keeping the
song's own tags (only the front cover is replaced): ID3 APIC for MP3 and WAV, a FLAC
picture, a Vorbis ``METADATA_BLOCK_PICTURE`` for OGG and Opus, ``covr`` for M4A. The
user's file is only ever read. The copy is written whole or not at all.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from actors.image import ImageActor
from actors.tags import FRONT_COVER, _picture
from albumforge.storage import as_store


def song_media_dir(song_id: str) -> str:
    """Relative folder of a song's cover and embedded copy (song ids are hex)."""
    if not str(song_id).isalnum():
        raise ValueError(f"song_id {song_id!r} is not a safe path component")
    return f"media/songs/{song_id}"


class SongCoverActor(ImageActor):
    actor_name = "SongCoverActor"
    media_folder = staticmethod(song_media_dir)


def _embed_id3(tags, pic) -> None:
    from mutagen.id3 import APIC

    tags.delall("APIC")
    tags.add(APIC(encoding=3, mime=pic.mime, type=FRONT_COVER, desc=pic.desc, data=pic.data))


def _embed_mp3(path: Path, pic) -> None:
    from mutagen.id3 import ID3, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    _embed_id3(tags, pic)
    tags.save(path, v2_version=3)


def _embed_wav(path: Path, pic) -> None:
    from mutagen.wave import WAVE

    f = WAVE(path)
    if f.tags is None:
        f.add_tags()
    _embed_id3(f.tags, pic)
    f.save(v2_version=3)


def _embed_flac(path: Path, pic) -> None:
    from mutagen.flac import FLAC

    f = FLAC(path)
    f.clear_pictures()
    f.add_picture(pic)
    f.save()


def _embed_ogg(path: Path, pic) -> None:
    import mutagen

    f = mutagen.File(path)  # OggVorbis or OggOpus
    if f is None:
        raise ValueError("not an Ogg file mutagen can read")
    if f.tags is None:
        f.add_tags()
    f.tags["METADATA_BLOCK_PICTURE"] = [base64.b64encode(pic.write()).decode("ascii")]
    f.save()


def _embed_m4a(path: Path, pic) -> None:
    from mutagen.mp4 import MP4, MP4Cover

    f = MP4(path)
    if f.tags is None:
        f.add_tags()
    fmt = MP4Cover.FORMAT_PNG if pic.mime == "image/png" else MP4Cover.FORMAT_JPEG
    f.tags["covr"] = [MP4Cover(pic.data, imageformat=fmt)]
    f.save()


EMBEDDERS = {".mp3": _embed_mp3, ".wav": _embed_wav, ".flac": _embed_flac, ".ogg": _embed_ogg, ".opus": _embed_ogg,
             ".m4a": _embed_m4a}


def embed_copy(out, song_path: str | Path, song_id: str, cover_rel: str) -> str:
    """Write the song's copy with its cover embedded; returns its path relative to OUT.
    Raises (naming the file) when the copy cannot be written or tagged."""
    src = Path(song_path)
    ext = src.suffix.lower()
    embed = EMBEDDERS.get(ext)
    if embed is None:
        raise ValueError(f"{src}: no cover embedding for {ext!r} files")
    rel = f"{song_media_dir(song_id)}/song{ext}"
    store = as_store(out)
    with tempfile.TemporaryDirectory(prefix="albumforge-embed-") as spool:
        if store.local:
            cover = store.local_path(cover_rel)
        else:  # the cover from object storage, into a local file for the tagger
            cover = Path(spool) / PurePosixPath(cover_rel).name
            store.download(cover_rel, cover)
        with store.writing(rel) as tmp:  # whole or not at all (uploaded whole to object storage)
            shutil.copyfile(src, tmp)
            embed(tmp, _picture(cover))
    return rel
