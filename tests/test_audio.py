"""Mastering, window stitching, encoding and tags on synthetic signals (no model)."""

import base64
import errno
import os
import subprocess
import sys
from pathlib import Path

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
from albumforge.atomic import WriteError, atomic_path

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


# ---------------------------------------------------------------- whole-or-nothing writes
def _tmp_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


def test_a_path_that_is_a_directory_fails_clearly_and_leaves_no_temp(tmp_path):
    y = synthetic(1.0).astype(np.float32)
    (tmp_path / "media" / "abc" / "track-01.ogg").mkdir(parents=True)
    with pytest.raises(WriteError, match=r"cannot write .*media/abc/track-01\.ogg: Is a directory") as e:
        write_audio(y, SR, tmp_path / "media" / "abc" / "track-01", ["ogg"])
    assert isinstance(e.value, OSError) and e.value.errno == errno.EISDIR
    assert e.value.path == tmp_path / "media" / "abc" / "track-01.ogg"
    assert _tmp_files(tmp_path) == []


def test_a_parent_that_is_a_file_fails_clearly(tmp_path):
    (tmp_path / "media").write_text("not a directory")
    with pytest.raises(WriteError, match=r"cannot write .*media/abc/track-01\.wav: .*Not a directory") as e:
        write_audio(synthetic(0.5), SR, tmp_path / "media" / "abc" / "track-01", ["wav"])
    assert e.value.errno == errno.ENOTDIR
    (tmp_path / "media").unlink()
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "abc").write_text("a file where the album's folder goes")
    with pytest.raises(WriteError, match=r"media/abc is not a directory") as e:
        write_audio(synthetic(0.5), SR, tmp_path / "media" / "abc" / "track-01", ["wav"])
    assert e.value.errno == errno.ENOTDIR and _tmp_files(tmp_path) == []


def test_an_unknown_format_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="'aiff' not supported"):
        write_audio(synthetic(0.5), SR, tmp_path / "t", ["wav", "aiff"])
    assert list(tmp_path.iterdir()) == []  # checked before the first file, not after it


FILE_LIMIT_SCRIPT = r"""
import resource, signal, sys
from pathlib import Path
import numpy as np
from albumforge.atomic import WriteError
from actors.audio import write_audio

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
fmt, stem = sys.argv[1], Path(sys.argv[2])
x = (0.3 * np.random.default_rng(0).standard_normal(32000 * 30)).astype(np.float32)  # noise: 0.22-1.9 MB in any format, past the 100 kB limit
try:
    write_audio(x, 32000, stem, [fmt])
except WriteError as e:
    print(f"ERRNO {e.errno}")
    print(f"MESSAGE {e}")
else:
    print("NO ERROR")
"""


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "flac", "wav"])
def test_an_encoder_failing_mid_write_names_the_cause_and_removes_its_temp(fmt, tmp_path):
    """A file size limit makes libsndfile's own write() fail part-way, the way a full disk does."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", FILE_LIMIT_SCRIPT, fmt, str(tmp_path / "track-01")],
                          cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ERRNO {errno.EFBIG}" in proc.stdout, proc.stdout
    assert f"MESSAGE cannot write {tmp_path / f'track-01.{fmt}'}: File too large" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no temp, and no partial file under the real name


@pytest.fixture()
def small_fs(tmp_path):
    """A 1 MiB tmpfs: a real full disk. Skipped where mounting is not allowed (fails in CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = f"cannot mount a tmpfs here: {proc.stderr.strip()}"
        if os.environ.get("ALBUMFORGE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (ALBUMFORGE_REQUIRE_SERVICES=1: CI must not skip this)")
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_names_the_path_and_the_cause(small_fs):
    y = synthetic(30.0).astype(np.float32)  # 1.9 MB as 16-bit WAV: more than the disk holds
    [ogg] = write_audio(y, SR, small_fs / "media" / "abc" / "track-01", ["ogg"])  # a small file still fits
    with pytest.raises(WriteError, match=r"cannot write .*track-01\.wav: No space left on device") as e:
        write_audio(y, SR, small_fs / "media" / "abc" / "track-01", ["ogg", "wav"])
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (small_fs / "media" / "abc").iterdir()) == ["track-01.ogg"]  # temp gone
    assert sf.info(ogg).frames == len(y)


def test_temp_names_are_unique_per_writer_and_files_keep_the_umask(tmp_path):
    target = tmp_path / "cover.png"
    with atomic_path(target) as a, atomic_path(target) as b:  # two writers of one file at once
        assert a != b and a.parent == b.parent == tmp_path
        assert a.name.startswith(f".tmp-{os.getpid()}-") and a.name.endswith("-cover.png")
        a.write_bytes(b"first")
        b.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the last to finish wins, whole
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_an_error_or_interrupt_inside_the_write_removes_the_temp(tmp_path):
    target = tmp_path / "cover.png"
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match=r"cannot write .*cover\.png: ValueError: bad pixels") as e:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise ValueError("bad pixels")
    assert isinstance(e.value.cause, ValueError) and e.value.errno is None
    with pytest.raises(KeyboardInterrupt):  # passes through unchanged, still cleaned up
        with atomic_path(target) as tmp:
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and _tmp_files(tmp_path) == []
    # an image that PIL cannot encode (ImageActor._write's write)
    with pytest.raises(WriteError, match="cover.png: .*cannot write mode") as e:
        with atomic_path(target) as tmp:
            Image.new("CMYK", (4, 4)).save(tmp, format="PNG")
    assert target.read_bytes() == b"old" and _tmp_files(tmp_path) == []
