"""A 10-minute track in every format, written from worker threads (issue 8, part 2).

libvorbis overflows the calling thread's stack when libsndfile hands it a long buffer in
one call (FIELD-NOTES "Audio files"): a plain ``soundfile.write`` of 70 s of 32 kHz mono
OGG segfaults. ``write_audio`` feeds every encoder in blocks. Each case runs in its own
Python process, so a segfault fails the test (with the signal named) instead of killing
pytest. The small-stack thread (256 KiB) is the sharp edge: 65,536-frame blocks already
crash there, so the test fails if the blocks grow or stop being used.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECONDS, SR = 600, 32000
SMALL_STACK = 256 * 1024

SCRIPT = r"""
import hashlib, json, sys, threading, time
from pathlib import Path
import numpy as np
import soundfile as sf
from actors.audio import write_audio

fmt, out, seconds, sr, small_stack = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
n = seconds * sr
t = np.arange(n, dtype=np.float32) / np.float32(sr)
x = (0.25 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
x += np.random.default_rng(0).standard_normal(n, dtype=np.float32) * np.float32(0.02)
x *= np.float32(0.6) + np.float32(0.4) * np.sin(2 * np.pi * t / 60).astype(np.float32)  # slow swell
report, errors = {"frames": n}, []

def write(name):
    t0 = time.perf_counter()
    try:
        [path] = write_audio(x, sr, out / name, [fmt], compression_level=0.5)
        report[name] = {"path": str(path), "write_s": time.perf_counter() - t0}
    except BaseException as e:
        errors.append(f"{name}: {type(e).__name__}: {e}")

# a worker thread at the platform's default stack size (Ray runs threaded actors' calls on such threads)
threading.stack_size(0)
th = threading.Thread(target=write, args=("default-thread",)); th.start(); th.join()
# a worker thread with a small stack: 4x the ~64 KiB the encoders need per block
threading.stack_size(small_stack)
th = threading.Thread(target=write, args=("small-stack-thread",)); th.start(); th.join()
threading.stack_size(0)

for name in ("default-thread", "small-stack-thread"):
    if name not in report:
        continue
    t0 = time.perf_counter()
    y, rate = sf.read(report[name]["path"], dtype="float32", always_2d=False)
    report[name].update(read_s=time.perf_counter() - t0, rate=rate, read_frames=len(y),
                        info_frames=sf.info(report[name]["path"]).frames,
                        decoded_sha=hashlib.sha256(y.tobytes()).hexdigest())
    if name == "default-thread":  # content checks on the first file (the second must decode the same)
        m = min(len(x), len(y))
        rms = lambda a: float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
        report[name].update(rms_in=rms(x), rms_out=rms(y), rms_last_10s=rms(y[-10 * sr:]),
                            corr=float(np.corrcoef(x[:m], y[:m])[0, 1]))
report["errors"] = errors
print("REPORT " + json.dumps(report))
"""


def _run(fmt: str, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, str(out), str(SECONDS), str(SR), str(SMALL_STACK)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode < 0:
        pytest.fail(f"{fmt}: the writer process died of {signal.Signals(-proc.returncode).name}\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    return json.loads(line[len("REPORT "):])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ogg", "mp3", "flac", "wav"])
def test_ten_minute_track_writes_from_threads_in_every_format(fmt, tmp_path):
    r = _run(fmt, tmp_path)
    assert not r["errors"], r["errors"]
    n = r["frames"]
    for name in ("default-thread", "small-stack-thread"):
        got = r[name]
        assert got["rate"] == SR
        # WAV and FLAC are exact; Vorbis (granule positions) and MP3 (LAME's gapless header,
        # which libsndfile's mpg123 decoder honours) are exact here too, a frame of padding allowed
        tolerance = 0 if fmt in ("wav", "flac") else 1
        assert abs(got["info_frames"] - n) <= tolerance, (name, got["info_frames"], n)
        assert abs(got["read_frames"] - n) <= tolerance, (name, got["read_frames"], n)
        print(f"{fmt} {name}: write {got['write_s']:.2f} s, read {got['read_s']:.2f} s")
    d = r["default-thread"]
    assert abs(d["rms_out"] / d["rms_in"] - 1) < 0.05, d  # the level came through
    assert d["rms_last_10s"] > 0.5 * d["rms_in"], d  # not cut short or padded with silence
    assert d["corr"] > (0.999 if fmt in ("wav", "flac") else 0.9), d  # and it is the same signal
    # deterministic encoders: both threads wrote the same audio (OGG's stream serial differs)
    assert d["decoded_sha"] == r["small-stack-thread"]["decoded_sha"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"default-thread.{fmt}", f"small-stack-thread.{fmt}"]
