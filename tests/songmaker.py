"""Songs made in the tests: espeak-ng sings known lines over a synthetic music bed.

The bed is chords (a I-V-vi-IV triad progression of sines with a soft attack) and drums
as noise bursts (a low-passed kick on every beat, a bright snare burst on the off-beats).
The voice is mixed at ``voice_db`` relative to the bed (RMS), then the whole is
normalised and encoded with soundfile; tags are written with mutagen.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050  # espeak-ng's rate
LINES = [
    "the river runs through golden fields tonight",
    "I will follow the morning light back home",
]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def voice(text: str, pitch: int = 60, speed: int = 140) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "v.wav"
        subprocess.run(["espeak-ng", "-p", str(pitch), "-s", str(speed), "-w", str(wav), text], check=True,
                       capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
    assert sr == SR, sr
    return audio


def bed(seconds: float, seed: int = 0, bpm: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n, dtype=np.float32)
    chords = [(261.6, 329.6, 392.0), (196.0, 246.9, 293.7), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6)]
    bar = 4 * 60.0 / bpm
    for k in range(int(np.ceil(seconds / bar))):
        a, b = int(k * bar * SR), min(n, int((k + 1) * bar * SR))
        if a >= n:
            break
        tt = t[a:b] - t[a]
        env = np.minimum(1.0, tt / 0.05) * np.exp(-tt * 0.8)
        for f in chords[k % 4]:
            out[a:b] += (0.2 * env * np.sin(2 * np.pi * f * tt)).astype(np.float32)
    beat = 60.0 / bpm
    for k in range(int(seconds / beat)):
        a = int(k * beat * SR)
        m = min(n - a, int(0.12 * SR))
        burst = rng.standard_normal(m).astype(np.float32) * np.exp(-np.arange(m) / (0.02 * SR)).astype(np.float32)
        if k % 2 == 0:  # kick: low-passed burst
            burst = np.convolve(burst, np.ones(40, dtype=np.float32) / 40, mode="same") * 3
        else:  # snare: bright burst
            burst *= 0.5
        out[a:a + m] += burst
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-12))


def song_audio(lines: list[str] | None, voice_db: float | None, seconds: float | None = None,
               seed: int = 0) -> np.ndarray:
    """The voice (lines with 0.6 s pauses, after a 1 s intro) over the bed at ``voice_db`` dB
    above the bed's RMS; ``lines=None``: the bed alone (instrumental)."""
    parts = []
    if lines:
        gap = np.zeros(int(0.6 * SR), dtype=np.float32)
        parts = [np.zeros(SR, dtype=np.float32)]
        for line in lines:
            parts += [voice(line), gap]
    v = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    total = max(len(v) + SR, int((seconds or 0) * SR))
    music = bed(total / SR, seed)
    mix = music.copy()
    if len(v):
        v = v / rms(v[np.abs(v) > 1e-3]) * rms(music) * 10 ** (voice_db / 20)
        mix[: len(v)] += v
    return (0.9 * mix / np.max(np.abs(mix))).astype(np.float32)


def write_song(path: Path, audio: np.ndarray, tags: dict | None = None) -> Path:
    """Encode by extension (mp3, ogg, flac, wav) and write tags (title, artist, album, genre,
    year, lyrics) with mutagen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR)
    if tags:
        tag_file(path, tags)
    return path


def tag_file(path: Path, tags: dict) -> None:
    ext = path.suffix.lower()
    if ext in (".mp3", ".wav"):
        from mutagen.id3 import ID3, TALB, TCON, TDRC, TIT2, TPE1, USLT

        frames = {"title": TIT2, "artist": TPE1, "album": TALB, "genre": TCON, "year": TDRC}
        if ext == ".mp3":
            id3 = ID3()
        else:
            from mutagen.wave import WAVE

            w = WAVE(path)
            w.add_tags()
            id3 = w.tags
        for k, v in tags.items():
            if k == "lyrics":
                id3.add(USLT(encoding=3, lang="eng", desc="", text=v))
            else:
                id3.add(frames[k](encoding=3, text=v))
        if ext == ".mp3":
            id3.save(path, v2_version=3)
        else:
            w.save(v2_version=3)
    else:
        import mutagen

        f = mutagen.File(path)
        if f.tags is None:
            f.add_tags()
        for k, v in tags.items():
            f.tags["date" if k == "year" else k] = v
        f.save()
