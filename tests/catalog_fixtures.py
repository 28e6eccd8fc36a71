"""A realistic OUT folder for the catalogue tests, written without torch or Ray.

Real media (Vorbis sine tones at 32 kHz through soundfile, PNG covers through Pillow),
plans validated through AlbumPlan, and manifests written with albumforge.manifest so they
satisfy its schemas. The default batch has three ok albums (one with a failed track) and
one failed album; ``HOSTILE`` is an album whose every text field tries to break out.
Also: helpers to find Chromium and PostgreSQL, skipping (or failing, when
ALBUMFORGE_REQUIRE_SERVICES=1) when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from albumforge import manifest as mf
from albumforge import parts
from director.schema import AlbumPlan

SR = 32000
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class TrackSpec:
    title: str
    seconds: float
    status: str = "ok"
    error: str | None = None
    lyrics: str | None = None
    extra_paths: tuple[str, ...] = ()  # more manifest paths (e.g. hostile ones)


@dataclass(frozen=True)
class AlbumSpec:
    album_id: str
    title: str | None
    artist: str | None
    concept: str
    genres: tuple[str, ...] = ("ambient",)
    inputs: dict = field(default_factory=dict)
    tracks: tuple[TrackSpec, ...] = ()
    status: str = "ok"
    error: str | None = None
    liner_notes: str = "Recorded in one night."
    prompt_note: str = ""  # added to every prompt

    @property
    def ok_tracks(self) -> list[int]:
        return [i + 1 for i, t in enumerate(self.tracks) if t.status == "ok"]


ALBUMS = (
    AlbumSpec(
        "a1b2c3d4e5f60001", "Neon Harbour", "The Tidal Lights", "night ferries crossing a neon harbour",
        genres=("Synthwave", "Ambient"), inputs={"genre": "synthwave", "mood": "calm"},
        tracks=(TrackSpec("Harbour Lights", 2.0), TrackSpec("Low Tide", 3.0, lyrics="salt on the glass"),
                TrackSpec("Last Ferry", 2.5)),
        liner_notes="Three nocturnes for the harbour.\n\nMixed at dawn.",
    ),
    AlbumSpec(
        "a1b2c3d4e5f60002", "Desert Bloom", "Mirage Quartet", "a desert flowering after rain",
        genres=("Folk", "Ambient"), inputs={"mood": "warm"},
        tracks=(TrackSpec("Sand Song", 3.5), TrackSpec("Oasis", 2.0, "failed", "CUDA out of memory")),
    ),
    AlbumSpec(
        "a1b2c3d4e5f60003", "Été à Paris", "Les Nuages", "a rainy summer in Paris",
        genres=("Chanson",), inputs={"mood": "dreamy"}, tracks=(TrackSpec("Pluie", 1.5),),
    ),
    AlbumSpec(
        "a1b2c3d4e5f60004", None, None, "a concept the director could not plan",
        status="failed", error="director: invalid JSON after 3 attempts",
    ),
)

XSS = "<script>window.__pwned=1;alert(1)</script>"
HOSTILE = AlbumSpec(
    "a1b2c3d4e5f6dead",
    '"><img src=x onerror="window.__pwned=2"> ../../../../tmp/pwned',
    "<script>window.__pwned=3</script> \u202eevil\u202c עברית",
    XSS + "'\"; ../../etc/passwd <iframe src=\"javascript:window.__pwned=4\"></iframe>",
    genres=("<svg onload=window.__pwned=5>", "rock'n'roll \"live\""),
    inputs={"genre": "</script><script>window.__pwned=6</script>", "mood": "\"><b onmouseover=window.__pwned=7>x</b>"},
    tracks=(
        TrackSpec("</audio><script>window.__pwned=8</script>", 2.0, lyrics="</pre><script>window.__pwned=9</script>",
                  extra_paths=("../outside.ogg", "/etc/passwd", "media/../../outside.ogg")),
        TrackSpec("مرحبا بالعالم 🎸🔥 {{ 7*7 }}", 1.5),
    ),
    liner_notes="It's \"quoted\" & <b>bold</b>\n\n<img src=x onerror=window.__pwned=10> 🎸 مرحبا",
    prompt_note=" <script>window.__pwned=11</script> {% raw %}",
)
HOSTILE_FAILED = AlbumSpec(
    "a1b2c3d4e5f6beef", "<img src=x onerror=window.__pwned=12>", None, XSS,
    status="failed", error="<img src=x onerror=window.__pwned=13> ../../",
)


@dataclass
class SampleOut:
    out: Path
    albums: list[AlbumSpec]
    durations: dict[str, dict[int, float]]  # album_id -> track_no -> seconds of the written file
    runs: list[str]

    @property
    def ok(self) -> list[AlbumSpec]:
        return [a for a in self.albums if a.status == "ok"]

    @property
    def failed(self) -> list[AlbumSpec]:
        return [a for a in self.albums if a.status != "ok"]


def write_tone(path: Path, seconds: float, freq: float) -> float:
    t = np.arange(int(round(SR * seconds))) / SR
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) * fade).astype("float32"), SR, format="OGG", subtype="VORBIS")
    return sf.info(path).duration


def write_cover(path: Path, seed: int, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    ramp = np.linspace(0, 1, size)[None, :, None]
    pixels = (base[None, None, :] * (0.4 + 0.6 * ramp)).repeat(size, axis=0).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)


def _plan(spec: AlbumSpec) -> AlbumPlan:
    return AlbumPlan.model_validate({
        "title": spec.title,
        "artist": spec.artist,
        "liner_notes": spec.liner_notes,
        "soundscape": {
            "genres": list(spec.genres), "instruments": ["synth pads", "bass", "field recordings"],
            "tempo_min_bpm": 70, "tempo_max_bpm": 100, "production": "warm tape saturation" + spec.prompt_note,
            "cultural_elements": [], "instrumental": True,
        },
        "cover_prompt": f"album cover for {spec.concept}{spec.prompt_note}",
        "tracks": [
            {"title": t.title, "music_prompt": f"{spec.genres[0]} track, {t.title}{spec.prompt_note}",
             "visual_prompt": f"art for {t.title}{spec.prompt_note}", "duration_s": t.seconds, "lyrics": t.lyrics}
            for t in spec.tracks
        ],
    })


def write_album(out: Path, spec: AlbumSpec, run_id: str, index: int = 0, legacy: bool = False) -> dict[int, float]:
    """Media, plan, tracks rows and (last, as the pipeline does) album row: as a catalogue
    part, or (``legacy``) as the per-album files the release before wrote."""
    aid, media = spec.album_id, f"media/{spec.album_id}"
    finished = T0 + timedelta(minutes=index)
    common = {"album_id": aid, "run_id": run_id}
    if spec.status != "ok":
        _write_album_rows(out, None, [{
            **common, "status": "failed", "error": spec.error, "source": f"concepts.txt:{index + 1}",
            "concept": spec.concept, "inputs_json": json.dumps(spec.inputs), "seed": index, "title": spec.title,
            "artist": spec.artist, "genres": [], "director": "offline", "engine": "tiny", "finished_at": finished,
        }], legacy)
        return {}
    plan = _plan(spec)
    (out / "plans").mkdir(parents=True, exist_ok=True)
    (out / "plans" / f"{aid}.json").write_text(
        json.dumps({"plan": plan.model_dump(mode="json"), "prompts": {"plan": f"Plan an album about {spec.concept}"}},
                   ensure_ascii=False), encoding="utf-8")
    write_cover(out / media / "cover.png", seed=index)
    durations, rows = {}, []
    for no, (t, tp) in enumerate(zip(spec.tracks, plan.tracks), start=1):
        row = {**common, "track_no": no, "status": t.status, "error": t.error, "title": tp.title,
               "music_prompt": tp.music_prompt, "visual_prompt": tp.visual_prompt, "seed": 1000 * index + no,
               "planned_s": tp.duration_s, "engine": "tiny", "model": "tiny-musicgen", "finished_at": finished,
               "lyrics": tp.lyrics}
        if t.status == "ok":
            path = f"{media}/track-{no:02d}.ogg"
            durations[no] = write_tone(out / path, t.seconds, 220.0 * (1 + no / 4))
            row.update(path=path, paths=[path, *t.extra_paths], duration_s=durations[no], sample_rate=SR,
                       lufs=-14.0, gen_s=0.4 * no, encode_s=0.05)
        rows.append(row)
    _write_album_rows(out, rows, [{
        **common, "status": "ok", "error": None, "source": f"concepts.txt:{index + 1}", "concept": spec.concept,
        "inputs_json": json.dumps(spec.inputs, ensure_ascii=False), "seed": index, "title": plan.title,
        "artist": plan.artist, "liner_notes": plan.liner_notes, "genres": list(plan.soundscape.genres),
        "soundscape_json": plan.soundscape.model_dump_json(), "cover_prompt": plan.cover_prompt,
        "cover_path": f"{media}/cover.png", "cover_seed": 7 + index, "cover_width": 64, "cover_height": 64,
        "plan_path": f"plans/{aid}.json", "n_tracks": len(rows), "n_tracks_ok": len(durations),
        "duration_s": sum(durations.values()), "director": "offline", "director_model": "offline-v1",
        "director_attempts": 1, "tokens_in": 0, "tokens_out": 0, "engine": "tiny", "music_model": "tiny-musicgen",
        "image_model": "tiny-sd", "plan_s": 0.1, "music_s": 1.5, "image_s": 0.3, "encode_s": 0.2,
        "finished_at": finished,
    }], legacy)
    return durations


def _write_album_rows(out: Path, tracks: list[dict] | None, albums: list[dict], legacy: bool) -> None:
    """Fixture rows name only the fields a test cares about; the rest are null, said so."""
    (album,) = albums
    aid = album["album_id"]
    if legacy:
        if tracks is not None:
            write_manifest(out, "tracks", aid, tracks)
        write_manifest(out, "albums", aid, [album])
    else:
        parts.write_album(out, {**mf.null_row("albums"), **album},
                          [{**mf.null_row("tracks"), **t} for t in tracks or []])


def write_manifest(out: Path, kind: str, name: str, rows: list[dict]) -> None:
    """A per-album (per-run) file exactly as the release before this catalogue wrote it:
    ``manifests/<kind>/<name>.parquet`` (a legacy file for ``albumforge.parts``)."""
    mf.write_rows(mf.manifest_dir(out, kind) / f"{name}.parquet", [{**mf.null_row(kind), **r} for r in rows],
                  mf.SCHEMAS[kind])


def write_run(out: Path, run_id: str, specs: list[AlbumSpec], start: datetime = T0, skipped: int = 0,
              legacy: bool = False) -> None:
    n_ok = sum(a.status == "ok" for a in specs)
    wall = 90.0 + 30.0 * len(specs)
    row = {
        "run_id": run_id, "started_at": start, "finished_at": start + timedelta(seconds=wall), "wall_s": wall,
        "concepts_path": "concepts.txt", "config_json": json.dumps({"music": {"engine": "tiny"}}),
        "versions_json": json.dumps({"albumforge": "0.1.0"}), "resources_json": json.dumps({"CPU": 2}),
        "engine": "tiny", "music_model": "tiny-musicgen", "image_model": "tiny-sd", "director": "offline",
        "n_concepts": len(specs) + skipped, "n_skipped": skipped, "n_ok": n_ok, "n_failed": len(specs) - n_ok,
        "n_tracks": sum(len(a.ok_tracks) for a in specs), "minutes_per_album": wall / 60 / max(n_ok, 1),
        "stage_s_json": json.dumps({"plan": 1.0, "music": 20.0, "image": 5.0}),
    }
    if legacy:
        write_manifest(out, "runs", run_id, [row])
    else:
        parts.write_row(out, "runs", {**mf.null_row("runs"), **row})


def make_out(out: Path, albums=ALBUMS, run_id: str = "run-0001", legacy: bool = False) -> SampleOut:
    out.mkdir(parents=True, exist_ok=True)
    durations = {a.album_id: write_album(out, a, run_id, i, legacy) for i, a in enumerate(albums)}
    write_run(out, run_id, list(albums), legacy=legacy)
    return SampleOut(out, list(albums), durations, [run_id])


def resume(sample: SampleOut, run_id: str = "run-0002", legacy: bool = False) -> SampleOut:
    """A second run over the same folder that retries what failed: failed albums get made
    (two tracks each) and failed tracks get redone; finished albums are left alone."""
    redone, albums = [], []
    for a in sample.albums:
        if a.status != "ok":
            a = replace(a, title=f"Retried {a.album_id[-4:]}", artist="Second Take", status="ok", error=None,
                        tracks=(TrackSpec("First", 1.5), TrackSpec("Second", 2.0)))
        elif any(t.status != "ok" for t in a.tracks):
            a = replace(a, tracks=tuple(replace(t, status="ok", error=None) for t in a.tracks))
        else:
            albums.append(a)
            continue
        redone.append(a)
        albums.append(a)
    durations = dict(sample.durations)
    for i, a in enumerate(redone):
        durations[a.album_id] = write_album(sample.out, a, run_id, 10 + i, legacy)
    write_run(sample.out, run_id, redone, start=T0 + timedelta(hours=1), skipped=len(sample.albums) - len(redone),
              legacy=legacy)
    return SampleOut(sample.out, albums, durations, sample.runs + [run_id])


# --- real services: skip when missing, fail when CI says they must be there ---

def services_required() -> bool:
    return os.environ.get("ALBUMFORGE_REQUIRE_SERVICES") == "1"


def missing_service(reason: str):
    if services_required():
        pytest.fail(f"{reason} (ALBUMFORGE_REQUIRE_SERVICES=1: CI must not skip this)")
    pytest.skip(reason)


CHROMIUM = os.environ.get("ALBUMFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if path is None:
        missing_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return path
