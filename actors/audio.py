"""Audio post-processing on the CPU: stitch windows, master, encode.

- ``crossfade``: joins two generate() windows that overlap (the later one starts with the
  earlier one's context): an equal-power fade whose gains are corrected for how alike the
  two overlaps are, so neither a click nor a loudness swell marks the seam.
- ``master``: DC and NaN clean-up, fades, loudness normalisation to an integrated LUFS
  target (ITU-R BS.1770-4 via pyloudnorm), and a look-ahead limiter that keeps the true
  peak (4x oversampled, scipy.signal.resample_poly) under a ceiling in dBTP.
- ``write_audio``: soundfile/libsndfile encoders (OGG/Vorbis, MP3, FLAC, WAV), fed in
  blocks (any length, from any thread), each file written whole or not at all; tags and
  the cover are added later by ``actors.tags`` (the cover is drawn after the music).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from albumforge.atomic import atomic_path

# soundfile (format, subtype) per file suffix
FORMATS = {
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "PCM_16"),
}
OVERSAMPLE = 4  # true-peak estimate: BS.1770-4 asks for at least 4x at 48 kHz
LIMITER_WINDOW_S = 0.01  # look-ahead (and release) of the limiter's gain, each side of a peak
BLOCK_S = 0.4  # BS.1770 gating block: shorter audio has no integrated loudness
# Frames handed to the encoder per sf_writef call. libvorbis's _preextrapolate_helper
# alloca()s ~4 bytes per buffered frame and channel on the calling thread's stack, and
# libsndfile passes a whole write to it at once (libsndfile #1095, python-soundfile
# #396/#426): one soundfile.write of a 32 kHz mono OGG segfaults from ~65 s on with an
# 8 MiB stack. 16,384 frames (~64 KiB of stack) stays safe in a thread with a 128 KiB
# stack (musl's default; macOS gives threads 512 KiB) and costs nothing in speed.
BLOCK_FRAMES = 16_384
SFE_SYSTEM = 2  # libsndfile's error code for a failed system call (errno words on the handle)
_ERRNO_BY_TEXT = {os.strerror(code): code for code in errno.errorcode}


# ---------------------------------------------------------------- stitching windows
def crossfade(head: np.ndarray, tail: np.ndarray, overlap: int, fade: int) -> np.ndarray:
    """``head`` followed by ``tail``, whose first ``overlap`` samples cover the same time as
    the last ``overlap`` samples of ``head``; the switch is a ``fade``-sample crossfade in
    the middle of the overlap (away from both windows' edges).

    Equal-power gains (cos, sin) keep the level of two unrelated signals; the continuation's
    overlap is the *same* audio codes decoded again (correlation close to 1), where plain
    equal-power would swell by 3 dB. Dividing by sqrt(1 + 2·rho·cos·sin), rho the measured
    correlation of the two overlaps, keeps the power constant: equal-power at rho = 0,
    equal-gain at rho = 1; rho is clipped at -0.5 (a phase-opposed overlap gains <= 3 dB).
    """
    head = np.asarray(head, dtype=np.float32)
    tail = np.asarray(tail, dtype=np.float32)
    if not 0 <= fade <= overlap <= min(len(head), len(tail)):
        raise ValueError(f"crossfade needs 0 <= fade={fade} <= overlap={overlap} <= both lengths "
                         f"(head {len(head)}, tail {len(tail)})")
    start = (overlap - fade) // 2  # offset of the fade inside the overlap
    h0 = len(head) - overlap + start  # where the fade begins in head
    if fade == 0:
        return np.concatenate([head[:h0], tail[start:]])
    a, b = head[h0 : h0 + fade], tail[start : start + fade]
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    rho = float(np.clip(np.dot(a, b) / denom, -0.5, 1.0)) if denom > 0 else 0.0
    theta = (np.arange(fade, dtype=np.float64) + 0.5) / fade * (np.pi / 2)
    g_out, g_in = np.cos(theta), np.sin(theta)
    norm = np.sqrt(1.0 + 2.0 * rho * g_out * g_in)
    mixed = (a * (g_out / norm) + b * (g_in / norm)).astype(np.float32)
    return np.concatenate([head[:h0], mixed, tail[start + fade :]])


# ---------------------------------------------------------------- mastering
def _oversampled(x: np.ndarray) -> np.ndarray:
    """|x| at 4x the rate: scipy.signal.resample_poly's 81-tap Kaiser FIR (20 taps a phase,
    longer than BS.1770-4's 48-tap reference, so it reads inter-sample peaks at least as high).
    Like any 4x meter it can under-read content near Nyquist by up to ~0.7 dB."""
    from scipy.signal import resample_poly

    return np.abs(resample_poly(x, OVERSAMPLE, 1))[: len(x) * OVERSAMPLE]


def true_peak(x: np.ndarray) -> float:
    """Peak of the 4x-oversampled signal (catches inter-sample peaks a DAC would make)."""
    return float(_oversampled(x).max()) if len(x) else 0.0


def loudness(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (BS.1770-4 with gating); NaN when shorter than one
    400 ms block, -inf for silence."""
    import pyloudnorm

    if len(x) < int(BLOCK_S * sample_rate) + 1:
        return float("nan")
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(x, dtype=np.float64)))


def limit(x: np.ndarray, sample_rate: int, ceiling_db: float) -> np.ndarray:
    """A look-ahead brick-wall limiter on the true peak: the gain needed under every
    oversampled peak, min-filtered then box-smoothed over the same window (so the smooth
    gain is never above what any sample needs), then a final trim for what is left."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = 10.0 ** (ceiling_db / 20.0)
    n = len(x)
    if n == 0:
        return x
    peak = _oversampled(x).reshape(n, OVERSAMPLE).max(axis=1)  # the true peak around each sample
    if peak.max() <= ceiling:
        return x
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    size = 2 * max(1, int(LIMITER_WINDOW_S * sample_rate)) + 1
    gain = uniform_filter1d(minimum_filter1d(need, size=size), size=size)
    x = (x * gain).astype(np.float32)
    tp = true_peak(x)
    if tp > ceiling:  # interpolation between gain steps can leave a hair above the ceiling
        x = (x * (ceiling / tp * 0.999)).astype(np.float32)
    return x


def _fade(n: int, length: int) -> np.ndarray:
    """A raised-cosine ramp 0 -> 1 of ``length`` samples (at most a quarter of ``n``)."""
    length = min(length, n // 4)
    return 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, length, dtype=np.float64))


def master(
    samples: np.ndarray,
    sample_rate: int,
    target_lufs: float | None = -14.0,
    true_peak_db: float = -1.0,
    fade_in_s: float = 0.05,
    fade_out_s: float = 2.0,
) -> tuple[np.ndarray, float]:
    """A finished track: float32 mono, the fades, ``target_lufs`` integrated (None: level
    left alone), true peak under ``true_peak_db``. Returns (samples, measured LUFS)."""
    # 1. clean: mono float, no NaN/inf, no DC offset
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    x = x - x.mean() if len(x) else x
    # 2. fades (before loudness, so the target is met by the track as heard)
    n = len(x)
    ramp_in, ramp_out = _fade(n, int(fade_in_s * sample_rate)), _fade(n, int(fade_out_s * sample_rate))
    if len(ramp_in):
        x[: len(ramp_in)] *= ramp_in
    if len(ramp_out):
        x[n - len(ramp_out) :] *= ramp_out[::-1]
    # 3. gain to the target, limit, re-measure: limiting lowers the loudness a little, so
    #    the gain is corrected from the original a few times (never limiting twice)
    x = x.astype(np.float32)
    measured = loudness(x, sample_rate)
    if target_lufs is not None and np.isfinite(measured):
        gain_db = target_lufs - measured
        for _ in range(4):
            y = limit((x * 10.0 ** (gain_db / 20.0)).astype(np.float32), sample_rate, true_peak_db)
            measured = loudness(y, sample_rate)
            if not np.isfinite(measured) or abs(measured - target_lufs) < 0.1:
                break
            gain_db += target_lufs - measured
    else:
        y = limit(x, sample_rate, true_peak_db)
        measured = loudness(y, sample_rate)
    return np.clip(y, -1.0, 1.0).astype(np.float32), measured


# ---------------------------------------------------------------- encoding
def _libsndfile_cause(e: Exception, handle) -> Exception:
    """An OSError carrying the system cause of a libsndfile "System error" (a full disk,
    a file size limit), read from the still-open handle; any other error as it was.

    soundfile only says "System error."; libsndfile keeps the words ("System error : No
    space left on device.") on the handle, reached through soundfile's cffi binding."""
    if not isinstance(e, sf.LibsndfileError) or e.code != SFE_SYSTEM or handle is None:
        return e
    try:
        text = sf._ffi.string(sf._snd.sf_strerror(handle)).decode("utf-8", "replace")
    except Exception:  # a soundfile without these internals: keep its own message
        return e
    words = text.split(":", 1)[-1].strip().rstrip(".")
    code = _ERRNO_BY_TEXT.get(words)
    return OSError(code, words) if code is not None else OSError(None, words or str(e))


def _encode(tmp: Path, samples: np.ndarray, sample_rate: int, fmt: str, level: float | None) -> None:
    """Encode ``samples`` (frames or frames x channels) into the file ``tmp`` in blocks of
    BLOCK_FRAMES, so no encoder ever sees a long buffer in one call."""
    major, subtype = FORMATS[fmt]
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    f = sf.SoundFile(tmp, "w", sample_rate, channels, subtype=subtype, format=major, compression_level=level)
    try:
        for start in range(0, len(samples), BLOCK_FRAMES):
            f.write(samples[start : start + BLOCK_FRAMES])
    except Exception as e:
        cause = _libsndfile_cause(e, f._file)
        try:
            f.close()  # flushing after a failed write may fail again: the first cause is the one
        except Exception:
            pass
        if cause is e:
            raise
        raise cause from e
    try:
        f.close()  # OGG, MP3 and FLAC write their last frames here: a full disk can show up now
    except Exception as e:
        raise _libsndfile_cause(e, None) from e


def write_audio(
    samples: np.ndarray, sample_rate: int, stem: Path | str, formats: list[str], compression_level: float | None = None,
    store=None,
) -> list:
    """Write ``stem.<fmt>`` for every format, each whole or not at all: encoded in blocks
    into a temp file of this writer's own (``albumforge.atomic``), then renamed. With
    ``store`` (an ``albumforge.storage.Store``), ``stem`` is a path inside it and each file
    goes there whole (encoded into a local temp file, then uploaded for object storage);
    the paths returned are then the relative ones.

    ``compression_level`` (0 best .. 1 smallest) applies to OGG, MP3 and FLAC; None keeps
    libsndfile's default. A file that cannot be written raises ``WriteError`` (an OSError)
    naming it and the cause ("cannot write .../track-01.ogg: No space left on device"),
    with no temp file left; files of earlier formats stay written."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"audio format {fmt!r} not supported (use one of {sorted(FORMATS)})")
    samples = np.ascontiguousarray(samples)
    if samples.ndim not in (1, 2):
        raise ValueError(f"audio samples must be frames or frames x channels, got shape {samples.shape}")
    paths = []
    for fmt in formats:
        if store is None:
            path = Path(stem).with_suffix(f".{fmt}")
            dest = atomic_path(path)
        else:
            path = f"{stem}.{fmt}"
            dest = store.writing(path)
        with dest as tmp:
            _encode(tmp, samples, sample_rate, fmt, compression_level if fmt != "wav" else None)
        paths.append(path)
    return paths
