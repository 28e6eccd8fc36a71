"""Outputs on object storage (issue 11, item 3): ``--out s3://bucket/prefix`` end to end.

A real S3-compatible server on loopback (``tests/s3_server.py``, moto over HTTP), reached
through the same client code as real S3 (s3fs, botocore, ``AWS_ENDPOINT_URL``): the real
CLI generates into the bucket, a re-run resumes (only a deleted track is made again), the
site is built into the bucket, the catalogue loads into SQLite and ``stats`` reads it. The
one-run-per-OUT hold refuses a second run, and no secret lands anywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import logging

import pytest

from albumforge.parts import read_latest
from albumforge.storage import Store
from albumforge.outlock import HOLD_REL, OutHeld, OutLock

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server's access log
REPO = Path(__file__).resolve().parent.parent
CONCEPTS = ["A lighthouse keeper's last winter", "Neon rain over a harbour city"]
FLAGS = ["--tracks", "2", "--seconds", "2", "--steps", "2", "--music-batch", "4", "--image-batch", "2"]


def _generate(concepts: Path, out: str, tiny_cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", out, "--tiny-cache", str(tiny_cache),
           *FLAGS, "--address", "local"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)


def _objects(store: Store) -> dict[str, str]:
    """Every object under OUT: path inside OUT -> ETag (changes when an object is rewritten)."""
    root = store.fs._strip_protocol(store.url)
    return {PurePosixPath(p).relative_to(root).as_posix(): info.get("ETag", "")
            for p, info in store.fs.find(root, detail=True).items()}


@pytest.mark.slow
def test_generate_resume_site_load_stats_on_s3(s3_out, tiny_cache, tmp_path, capsys):
    from ray_jobs.cli import main

    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    store = Store(s3_out)
    concepts = tmp_path / "c.txt"
    concepts.write_text("\n".join(CONCEPTS) + "\n")

    # 1. generate straight into the bucket
    first = _generate(concepts, s3_out, tiny_cache)
    assert first.returncode == 0, first.stderr[-3000:]
    albums = read_latest(s3_out, "albums").to_pylist()
    tracks = read_latest(s3_out, "tracks").to_pylist()
    assert len(albums) == 2 and {a["status"] for a in albums} == {"ok"}
    assert len(tracks) == 4 and {t["status"] for t in tracks} == {"ok"}
    objects = _objects(store)
    for a in albums:  # media, plans, item records and manifests are objects in the bucket
        assert a["cover_path"] in objects and a["plan_path"] in objects
        assert any(k.startswith(f"items/{a['album_id']}/") for k in objects)
    for t in tracks:
        assert all(p in objects for p in t["paths"])
    for kind in ("albums", "tracks", "runs"):  # catalogue parts (albumforge.parts), merged at the run's end
        assert len([k for k in objects if k.startswith(f"manifests/{kind}/")]) == 1, kind
    runs = read_latest(s3_out, "runs").to_pylist()
    assert len(runs) == 1
    run_id = runs[0]["run_id"]
    assert f".albumforge/logs/{run_id}.log" in objects  # the local log, uploaded at the end
    assert HOLD_REL not in objects  # let go
    assert not [k for k in objects if ".tmp-" in k]

    # 2. a re-run resumes: one deleted track is made again, nothing else is rewritten
    gone = tracks[0]["paths"][0]
    store.delete(gone)
    before = _objects(store)
    second = _generate(concepts, s3_out, tiny_cache)
    assert second.returncode == 0, second.stderr[-3000:]
    after = _objects(store)
    assert gone in after
    media = [k for k in before if k.startswith("media/")]
    rewritten = [k for k in media if after.get(k) != before[k]]
    # the album's other files are re-tagged only when their album is rewritten; its cover stays
    same_album = PurePosixPath(gone).parent.as_posix()
    assert [k for k in rewritten if not k.startswith(same_album + "/track-")] == [], rewritten
    assert {a["status"] for a in read_latest(s3_out, "albums").to_pylist()} == {"ok"}

    # 3. the site, written into the bucket with relative links that resolve there
    capsys.readouterr()
    assert main(["site", s3_out]) == 0
    after = _objects(store)
    pages = [k for k in after if k.startswith("site/albums/") and k.endswith(".html")]
    assert len(pages) == 2
    for page in pages:
        html = store.read_text(page)
        links = re.findall(r'(?:src|href)="([^"#?]+)"', html)
        media_links = [ln for ln in links if "/media/" in ln or ln.startswith("../media/")]
        assert media_links, html[:500]
        for link in links:
            if "://" in link or link.startswith(("mailto:", "data:", "/")):
                continue
            target = (PurePosixPath(page).parent / link).as_posix()
            parts = []
            for part in target.split("/"):
                parts = parts[:-1] if part == ".." else parts + [part]
            assert "/".join(parts) in after, f"{page} links {link}: no such object"
    assert "site/index.html" in after

    # 4. load into SQLite (the bucket holds no database: --db is named) and stats
    db = tmp_path / "catalog.sqlite"
    assert main(["load", s3_out]) == 1 and "--db" in capsys.readouterr().err
    assert main(["load", s3_out, "--db", f"sqlite:///{db}"]) == 0
    import sqlalchemy as sa

    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        assert conn.execute(sa.text("select count(*) from albums")).scalar() == 2
        assert conn.execute(sa.text("select count(*) from tracks")).scalar() == 4
    capsys.readouterr()
    assert main(["stats", s3_out]) == 0
    assert "2" in capsys.readouterr().out

    # 5. no secret anywhere: objects, the local log copies, the database, the console
    for key in after:
        assert secret.encode() not in store.read_bytes(key), key
    assert secret.encode() not in db.read_bytes()
    for result in (first, second):
        assert secret not in result.stdout + result.stderr
    for kind in ("runs", "albums", "tracks"):  # Parquet compresses: the decoded rows too
        assert secret not in json.dumps(read_latest(s3_out, kind).to_pylist(), default=str)
    local_logs = Path(tempfile.gettempdir()) / "albumforge-logs"
    for log in local_logs.glob(f"{run_id}*.log"):
        assert secret not in log.read_text(errors="replace")


@pytest.mark.slow
def test_a_held_s3_out_refuses_a_second_run(s3_out, tiny_cache, tmp_path):
    concepts = tmp_path / "c.txt"
    concepts.write_text(CONCEPTS[0] + "\n")
    with OutLock(s3_out, "run-holding"):
        t0 = time.time()
        result = _generate(concepts, s3_out, tiny_cache)
        assert time.time() - t0 < 120
    assert result.returncode == 2, result.stderr[-3000:]
    assert "in use by run run-holding" in result.stderr
    assert not Store(s3_out).exists("manifests/runs")  # refused before anything was written


@pytest.mark.slow
def test_cli_names_a_missing_bucket_and_exits_2(s3_out, tiny_cache, tmp_path):
    concepts = tmp_path / "c.txt"
    concepts.write_text(CONCEPTS[0] + "\n")
    result = _generate(concepts, "s3://no-such-bucket-" + os.urandom(4).hex() + "/run", tiny_cache)
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("albumforge:")]
    assert "--out s3://no-such-bucket-" in line and "cannot write there" in line
    assert "Traceback" not in result.stderr and os.environ["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_missing_bucket_is_a_named_error_before_ray(s3_out):
    from ray_jobs.pipeline import OutError, check_out

    missing = "s3://no-such-bucket-" + os.urandom(4).hex() + "/run"
    with pytest.raises(OutError, match=r"--out s3://no-such-bucket-.*cannot write there.*AWS_ENDPOINT_URL"):
        check_out(missing)
    check_out(s3_out)  # the fresh bucket is fine
    assert Store(s3_out).listdir(".albumforge") == []  # the probe is gone


# ---------------------------------------------------------------- the hold on object storage
def test_s3_hold_is_exclusive_and_let_go(s3_out):
    store = Store(s3_out)
    with OutLock(s3_out, "run-a", stale_s=60):
        assert json.loads(store.read_bytes(HOLD_REL))["run_id"] == "run-a"
        with pytest.raises(OutHeld, match="in use by run run-a"):
            OutLock(s3_out, "run-b").acquire()
    assert not store.exists(HOLD_REL)
    with OutLock(s3_out, "run-b"):
        pass


def test_s3_stale_hold_is_taken_over_by_one_run_only(s3_out):
    store = Store(s3_out)
    stale = {"run_id": "far", "host": "elsewhere", "pid": 1, "since": "x", "hold_id": "h1"}
    store.write_text(HOLD_REL, json.dumps(stale))
    time.sleep(1.2)  # not refreshed for longer than stale_s
    # another run is already taking this stale hold over (it created the takeover token)
    assert store.create_new(".albumforge/takeover-h1", b"{}")
    with pytest.raises(OutHeld, match="being taken over"):
        OutLock(s3_out, "run-late", stale_s=1).acquire()
    store.delete(".albumforge/takeover-h1")
    lock = OutLock(s3_out, "run-new", stale_s=1).acquire()  # alone: it takes the hold over
    try:
        assert lock.took_over["run_id"] == "far"
        assert json.loads(store.read_bytes(HOLD_REL))["run_id"] == "run-new"
    finally:
        lock.release()
    assert not store.exists(HOLD_REL) and not store.exists(".albumforge/takeover-h1")


def test_out_urls_in_the_config(tmp_path):
    from albumforge.config import RunConfig

    assert RunConfig.load(out="s3://bucket/run/").out == "s3://bucket/run"
    assert RunConfig.load(out=str(tmp_path)).out == tmp_path  # local folders stay Paths, as ever
    cfg = RunConfig.load(out="gs://bucket/x")
    assert RunConfig.model_validate_json(cfg.model_dump_json()).out == "gs://bucket/x"  # the run row's config
    with pytest.raises(ValueError, match="credentials in it is refused"):
        RunConfig.load(out="s3://KEY:SECRET@bucket/run")


def test_audio_tags_and_embedded_copies_on_s3(s3_out, tmp_path):
    """The writers the actors and the driver use, straight into the bucket: encoded audio,
    tags with the embedded cover (downloaded, tagged, uploaded whole), a song's copy."""
    import io

    import numpy as np
    from mutagen.oggvorbis import OggVorbis
    from PIL import Image

    from actors.audio import write_audio
    from actors.songcover import embed_copy
    from actors.tags import tag_album

    store = Store(s3_out)
    sr = 32000
    tone = (0.2 * np.sin(np.linspace(0, 440 * 2 * np.pi, sr))).astype(np.float32)
    rels = write_audio(tone, sr, "media/abc/track-01", ["ogg", "wav"], store=store)
    assert rels == ["media/abc/track-01.ogg", "media/abc/track-01.wav"]
    png = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 90)).save(png, format="PNG")
    store.write_bytes("media/abc/cover.png", png.getvalue())
    row = {"title": "Night Drive", "artist": "Tiny", "cover_path": "media/abc/cover.png", "n_tracks": 1, "year": 2026}
    tracks = [{"track_no": 1, "title": "Song 1", "status": "ok", "paths": rels}]
    assert tag_album(s3_out, row, tracks) == []
    store.download(rels[0], tmp_path / "t.ogg")
    ogg = OggVorbis(tmp_path / "t.ogg")
    assert ogg["TITLE"] == ["Song 1"] and ogg["METADATA_BLOCK_PICTURE"]
    song = tmp_path / "mine.ogg"
    song.write_bytes(store.read_bytes(rels[0]))
    rel = embed_copy(s3_out, song, "abc", "media/abc/cover.png")
    assert store.is_file(rel) and song.read_bytes() == store.read_bytes(rels[0])  # the input is never changed
