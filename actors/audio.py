"""Audio post-processing on the CPU: clean up the model's waveform and encode it.

Encoding goes through soundfile (libsndfile: OGG/Vorbis, FLAC, WAV).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

# soundfile (format, subtype) per file suffix
FORMATS = {
    "ogg": ("OGG", "VORBIS"),
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
}


def finish(samples: np.ndarray, sample_rate: int, fade_s: float = 0.05) -> np.ndarray:
    """Float32 mono in [-1, 1], DC removed, short fades so a track never starts or ends on a click."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    x = np.nan_to_num(x - x.mean(), nan=0.0, posinf=0.0, neginf=0.0)
    n = min(int(fade_s * sample_rate), len(x) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return np.clip(x, -1.0, 1.0)


def write_audio(samples: np.ndarray, sample_rate: int, stem: Path, formats: list[str]) -> list[Path]:
    """Write ``stem.<fmt>`` for every format (atomically: temp name, then rename)."""
    paths = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"audio format {fmt!r} not supported (use one of {sorted(FORMATS)})")
        major, subtype = FORMATS[fmt]
        path = Path(stem).with_suffix(f".{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        sf.write(tmp, samples, sample_rate, format=major, subtype=subtype)
        tmp.replace(path)
        paths.append(path)
    return paths
