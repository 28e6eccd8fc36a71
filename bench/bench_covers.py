"""Covers: the pipeline vs a plain sequential loop, and Whisper's real-time factor.

    python bench/bench_covers.py --songs 6                       # tiny engines, CPU (needs espeak-ng)
    python bench/bench_covers.py --songs 40 --engine real --whisper large-v3   # on GPUs

Songs are made as in the tests (espeak-ng over a synthetic bed, ``tests/songmaker.py``).
Both paths use the same actor classes and settings: the loop transcribes, plans and
paints one song at a time in this process (the classic one-song-at-a-time tool); the
pipeline is ``albumforge covers`` (Ray Data, warm actor pools, batches). Prints songs per
minute for each and their ratio, and Whisper's real-time factor (transcription seconds
per second of audio; below 1 is faster than real time) measured in the loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.jobs import batch_of  # noqa: E402
from albumforge.covers_config import CoversConfig  # noqa: E402
from ray_jobs.covers import cover_jobs, run, song_row  # noqa: E402
from ray_jobs.songs import read_songs  # noqa: E402
from tests.songmaker import LINES, song_audio, write_song  # noqa: E402

VERSES = [LINES, ["paper boats on a silver lake", "we sail until the morning breaks"],
          ["the city hums a neon tune", "under a cold and silver moon"], None]


def make_songs(folder: Path, n: int, seconds: float) -> Path:
    for k in range(n):
        verse = VERSES[k % len(VERSES)]
        write_song(folder / f"song{k:02d}.{['mp3', 'ogg', 'flac', 'wav'][k % 4]}",
                   song_audio(verse, 6.0, seconds=seconds, seed=k), {"title": f"Song {k}", "artist": "Bench"})
    return folder


def sequential(folder: Path, cfg: CoversConfig, out: Path) -> dict:
    """One song at a time through the same actors, in this process."""
    from actors.lyrics import LyricsActor
    from actors.songcover import SongCoverActor
    from ray_jobs.planner import CoverPlanner

    t0 = time.perf_counter()
    songs, _ = read_songs(folder, cfg.lyrics.max_minutes)
    lyrics = LyricsActor(str(out), cfg.lyrics, str(cfg.tiny_cache))
    planner = CoverPlanner(str(out), cfg.plan, None, cfg.lyrics.lyrics_chars)
    image = SongCoverActor(str(out), cfg.image, str(cfg.tiny_cache))
    load_s = time.perf_counter() - t0
    audio_s = whisper_s = 0.0
    ok = 0
    for s in songs:
        b = lyrics(batch_of([song_row(s, cfg.seed)]))
        audio_s += float(b["song_s"][0])
        whisper_s += float(b["transcribe_s"][0])
        b = image(cover_jobs(planner(b)))
        ok += b["status"][0] == "ok"
    wall = time.perf_counter() - t0
    return {"songs": ok, "wall_s": wall, "load_s": load_s, "songs_per_min": ok / (wall / 60),
            "whisper_rtf": whisper_s / audio_s if audio_s else None, "audio_s": audio_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--songs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=20.0, help="length of each made song")
    p.add_argument("--engine", choices=["tiny", "real"], default="tiny")
    p.add_argument("--whisper", default=None, help="real engine: faster-whisper size or folder")
    p.add_argument("--address", default="local")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_songs(tmp / "songs", args.songs, args.seconds)
        overrides = {"lyrics.model": args.whisper, "ray_address": args.address, "plan.director": "offline"}
        cfg = CoversConfig.load(preset=args.engine, out=tmp / "out-pipeline", **overrides)
        seq = sequential(folder, cfg, tmp / "out-loop")
        t0 = time.perf_counter()
        summary = run(folder, cfg)
        wall = time.perf_counter() - t0
        pipe = {"songs": summary.n_ok, "wall_s": wall, "songs_per_min": summary.n_ok / (wall / 60),
                "pools": summary.sizes}
    print(json.dumps({"sequential": seq, "pipeline": pipe,
                      "speedup": pipe["songs_per_min"] / seq["songs_per_min"] if seq["songs_per_min"] else None},
                     indent=2, default=str))


if __name__ == "__main__":
    main()
