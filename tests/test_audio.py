"""Mastering, window stitching, encoding and tags on synthetic signals (no model)."""

import base64

import mutagen
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3
from mutagen.oggvorbis import OggVorbis
from PIL import Image
from scipy.signal import resample

from actors.audio import crossfade, master, true_peak, write_audio
from actors.tags import tag_album

SR = 32000


def synthetic(seconds=10.0, seed=0):
    """A quiet pad with sharp transients: a high crest factor, so reaching a loud target needs the limiter."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.05 * np.sin(2 * np.pi * 220 * t) + 0.03 * np.sin(2 * np.pi * 3300 * t) + 0.02 * rng.standard_normal(len(t))
    x[:: SR // 4] += 0.9  # clicks four times a second
    return x


@pytest.mark.parametrize("target", [-14.0, -18.0, -10.0])
def test_loudness_meets_target_and_true_peak_stays_under_ceiling(target):
    y, lufs = master(synthetic(), SR, target_lufs=target, true_peak_db=-1.0)
    independent = pyloudnorm.Meter(SR).integrated_loudness(y.astype(np.float64))
    assert abs(independent - target) < 0.5 and abs(lufs - independent) < 1e-6
    assert 20 * np.log10(true_peak(y)) <= -1.0
    # an ideal (FFT, 8x) reconstruction reads higher only by what any 4x meter misses (BS.1770-4: < 0.7 dB)
    assert 20 * np.log10(np.abs(resample(y, 8 * len(y))).max()) <= -1.0 + 0.7
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_fades_start_and_end_in_silence():
    y, _ = master(synthetic(4.0) + 0.3, SR, fade_in_s=0.05, fade_out_s=1.0)  # DC offset removed too
    assert abs(y[0]) < 1e-6 and abs(y[-1]) < 1e-3
    assert np.abs(y[: int(0.01 * SR)]).max() < np.abs(y[int(0.1 * SR) : int(0.5 * SR)]).max() / 4
    assert np.abs(y[-int(0.1 * SR) :]).max() < np.abs(y[: SR]).max() / 4


def test_short_and_silent_tracks_are_left_unmeasured():
    y, lufs = master(synthetic(0.3), SR)  # shorter than one 400 ms loudness block
    assert np.isnan(lufs) and len(y) == int(0.3 * SR) and 20 * np.log10(true_peak(y)) <= -1.0
    y, lufs = master(np.zeros(SR), SR)
    assert lufs == float("-inf") and not y.any()


def test_crossfade_of_the_same_audio_is_seamless():
    """A continuation decodes the same codes again: equal-gain then, no +3 dB swell, no click."""
    x = synthetic(3.0).astype(np.float32)
    overlap, fade = SR // 2, SR // 4
    head, tail = x[: 2 * SR], x[2 * SR - overlap :]
    y = crossfade(head, tail, overlap, fade)
    assert len(y) == len(x) and np.abs(y - x).max() < 1e-5


def test_crossfade_of_unrelated_audio_keeps_power_and_has_no_click():
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    a = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.005 * rng.standard_normal(len(t))).astype(np.float32)
    b = (0.3 * np.sin(2 * np.pi * 440 * t + 2.0) + 0.005 * rng.standard_normal(len(t))).astype(np.float32)
    overlap = fade = SR // 2
    rms = lambda s: np.sqrt(np.mean(s.astype(np.float64) ** 2))

    def worst_jump(y):  # largest sample step at the seam over the largest step of the signal itself
        step = np.abs(np.diff(y))
        seam = step[len(a) - overlap - 100 : len(a) + 100].max()
        return seam / max(step[: len(a) - overlap - 100].max(), step[len(a) + 100 :].max())

    y = crossfade(a, b, overlap, fade)
    assert len(y) == 2 * len(a) - overlap
    assert worst_jump(y) < 1.5
    assert worst_jump(crossfade(a, b, overlap, 0)) > 5  # a hard cut is a click, and this test sees it
    mid = y[len(a) - overlap + fade // 4 : len(a) - fade // 4]
    assert abs(20 * np.log10(rms(mid) / rms(a))) < 1.0  # about the power of either side


# ---------------------------------------------------------------- formats and tags
@pytest.fixture()
def album(tmp_path):
    y, _ = master(synthetic(2.0), SR)
    formats = ["ogg", "mp3", "flac", "wav"]
    tracks = []
    for no in (1, 2):
        paths = write_audio(y, SR, tmp_path / "media" / "abc123" / f"track-{no:02d}", formats)
        tracks.append({"track_no": no, "title": f"Song {no}", "status": "ok",
                       "paths": [str(p.relative_to(tmp_path)) for p in paths]})
    tracks.append({"track_no": 3, "title": "Lost", "status": "failed", "paths": []})
    Image.new("RGB", (32, 24), (200, 40, 90)).save(tmp_path / "media" / "abc123" / "cover.png")
    row = {"title": "Night Drive", "artist": "The Tiny Models", "genres": ["synthwave", "ambient"],
           "cover_path": "media/abc123/cover.png", "n_tracks": 3, "year": 2026}
    return tmp_path, row, tracks


def test_formats_decode_to_the_same_length(album):
    out, _, tracks = album
    for rel in tracks[0]["paths"]:
        info = sf.info(out / rel)
        assert info.samplerate == SR and info.frames == 2 * SR, rel


def test_tags_and_cover_read_back_with_mutagen(album):
    out, row, tracks = album
    cover = (out / row["cover_path"]).read_bytes()
    assert tag_album(out, row, tracks) == []
    assert tag_album(out, row, tracks) == []  # again (a re-run): same tags, one picture
    for no in (1, 2):
        base = out / "media" / "abc123" / f"track-{no:02d}"
        ogg = OggVorbis(base.with_suffix(".ogg"))
        assert (ogg["TITLE"], ogg["ARTIST"], ogg["ALBUM"]) == ([f"Song {no}"], ["The Tiny Models"], ["Night Drive"])
        assert (ogg["TRACKNUMBER"], ogg["TRACKTOTAL"], ogg["DATE"]) == ([str(no)], ["3"], ["2026"])
        assert ogg["GENRE"] == ["synthwave", "ambient"]
        [block] = ogg["METADATA_BLOCK_PICTURE"]
        pic = Picture(base64.b64decode(block))
        assert pic.data == cover and pic.mime == "image/png" and pic.type == 3 and (pic.width, pic.height) == (32, 24)

        flac = FLAC(base.with_suffix(".flac"))
        assert flac["TITLE"] == [f"Song {no}"] and flac["TRACKNUMBER"] == [str(no)] and flac["DATE"] == ["2026"]
        assert [p.data for p in flac.pictures] == [cover]

        for suffix in (".mp3", ".wav"):
            id3 = ID3(base.with_suffix(suffix)) if suffix == ".mp3" else mutagen.File(base.with_suffix(suffix)).tags
            assert str(id3["TIT2"]) == f"Song {no}" and str(id3["TPE1"]) == "The Tiny Models"
            assert str(id3["TALB"]) == "Night Drive" and str(id3["TRCK"]) == f"{no}/3"
            assert str(id3.get("TYER") or id3["TDRC"]) == "2026"
            [apic] = id3.getall("APIC")
            assert apic.data == cover and apic.mime == "image/png" and apic.type == 3
        # the audio itself is untouched by tagging
        for suffix in (".ogg", ".mp3", ".flac", ".wav"):
            assert sf.info(base.with_suffix(suffix)).frames == 2 * SR
    assert not list(out.rglob(".tmp-*"))


def test_a_file_that_cannot_be_tagged_is_reported(album):
    out, row, tracks = album
    (out / tracks[1]["paths"][0]).write_bytes(b"not an ogg file")
    errors = tag_album(out, {**row, "cover_path": None}, tracks)
    assert len(errors) == 1 and errors[0].startswith(tracks[1]["paths"][0])
    assert "METADATA_BLOCK_PICTURE" not in OggVorbis(out / tracks[0]["paths"][0])  # no cover: none embedded
    assert OggVorbis(out / tracks[0]["paths"][0])["TITLE"] == ["Song 1"]
