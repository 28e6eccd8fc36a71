"""End to end on the tiny engine through Ray Data (the session's local Ray, 2 logical GPUs)."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

from albumforge import manifest as mf
from albumforge import parts
from albumforge.parts import read_latest
from ray_jobs.generate import pool_sizes, run

pytestmark = pytest.mark.slow

CONCEPTS = [
    "Neon rain over a floating city at midnight",
    "A lighthouse keeper's last winter",
    "Desert caravan under a meteor shower",
]


def check_out_folder(out, cfg):
    """Every manifest matches its schema, every file it names decodes as asked."""
    for kind, schema in mf.SCHEMAS.items():
        for rel, _ in parts.manifest_files(out, kind):
            assert pq.read_schema(out / rel).remove_metadata().equals(schema, check_metadata=False), rel
    albums = read_latest(out, "albums").to_pylist()
    tracks = read_latest(out, "tracks").to_pylist()
    for a in albums:
        if a["status"] != "ok":
            continue
        assert not os.path.isabs(a["cover_path"])
        with Image.open(out / a["cover_path"]) as im:
            assert im.size == (cfg.image.width, cfg.image.height)
        plan = json.loads((out / a["plan_path"]).read_text())
        assert plan["plan"]["title"] == a["title"]
        mine = [t for t in tracks if t["album_id"] == a["album_id"]]
        assert sorted(t["track_no"] for t in mine) == list(range(1, a["n_tracks"] + 1))
    for t in tracks:
        if t["status"] == "ok":
            info = sf.info(out / t["path"])
            assert info.samplerate == t["sample_rate"] == 32000
            assert abs(info.duration - t["planned_s"]) < 1e-3 and t["duration_s"] == pytest.approx(t["planned_s"])
    return albums, tracks


def test_three_concepts_end_to_end(ray_session, tiny_config, tmp_path):
    concepts = tmp_path / "c.txt"
    concepts.write_text("\n".join(CONCEPTS) + "\n")
    cfg = tiny_config(**{"image.width": 64, "image.height": 48})
    summary = run(concepts, cfg)
    assert (summary.n_ok, summary.n_failed, summary.n_tracks) == (3, 0, 6)
    albums, tracks = check_out_folder(cfg.out, cfg)
    assert sorted(a["concept"] for a in albums) == sorted(CONCEPTS)
    assert all(a["status"] == "ok" and a["n_tracks_ok"] == 2 for a in albums)
    assert len(tracks) == 6 and len({t["seed"] for t in tracks}) == 6
    runs = read_latest(cfg.out, "runs").to_pylist()
    assert len(runs) == 1 and runs[0]["n_ok"] == 3 and runs[0]["minutes_per_album"] > 0
    assert json.loads(runs[0]["config_json"])["music"]["engine"] == "tiny"
    stages = json.loads(runs[0]["stage_s_json"])
    assert stages["music"] > 0 and stages["image"] > 0

    # a second run finds everything finished and makes nothing
    again = run(concepts, cfg)
    assert (again.n_skipped, again.n_ok, again.n_failed) == (3, 0, 0)
    assert read_latest(cfg.out, "albums").num_rows == 3


def test_fractional_gpu_actors_are_placed_together(ray_session, tiny_config, tmp_path):
    """2 logical GPUs at 0.51 + 0.49: two music and two image actors hold GPUs at once."""
    concepts = tmp_path / "c.txt"
    concepts.write_text("\n".join(f"{c}, take {k}" for k in range(2) for c in CONCEPTS) + "\n")
    cfg = tiny_config(**{"music.batch_size": 2, "image.batch_size": 1})
    sizes = pool_sizes(ray_session.cluster_resources(), cfg)
    assert sizes["music_actors"] == sizes["image_actors"] == 2
    assert (sizes["music_gpus"], sizes["image_gpus"]) == (0.51, 0.49)  # one of each per card (placement.py)
    summary = run(concepts, cfg)
    assert summary.n_ok == 6
    albums, tracks = check_out_folder(cfg.out, cfg)
    workers = [json.loads(t["worker"]) for t in tracks] + [json.loads(a["cover_worker"]) for a in albums]
    actors = {(w["actor"], w["pid"]): w for w in workers}
    for w in workers:  # keep the last finish time per actor
        actors[(w["actor"], w["pid"])]["done"] = max(actors[(w["actor"], w["pid"])]["done"], w["done"])
    gpu_ids = {key: tuple(w["gpu_ids"]) for key, w in actors.items()}
    assert all(len(ids) == 1 for ids in gpu_ids.values()), gpu_ids  # each actor got one GPU id
    kinds = {k for k, _ in actors}
    assert kinds == {"MusicActor", "ImageActor"}
    # a music and an image actor lived at the same time, sharing the cluster's GPUs
    music = [w for (k, _), w in actors.items() if k == "MusicActor"]
    image = [w for (k, _), w in actors.items() if k == "ImageActor"]
    assert any(m["started"] < i["done"] and i["started"] < m["done"] for m in music for i in image)


def test_cpu_only_pools_ask_for_no_gpu(tiny_config):
    cfg = tiny_config(gpus="none")
    sizes = pool_sizes({"CPU": 8.0, "GPU": 4.0}, cfg)
    assert sizes["music_gpus"] == sizes["image_gpus"] == 0.0
    assert sizes["music_actors"] == 7  # (8 - 1) // (0.5 + 0.5)
    sizes = pool_sizes({"CPU": 16.0, "GPU": 3.0}, tiny_config())
    assert sizes["music_actors"] == sizes["image_actors"] == 3


def test_bad_rows_are_failed_albums_and_the_batch_goes_on(ray_session, tiny_config, tmp_path):
    concepts = tmp_path / "c.jsonl"
    concepts.write_text("\n".join([
        json.dumps({"concept": "A good concept about tides", "mood": "calm"}),
        json.dumps({"concept": ""}),
        json.dumps({"concept": 7}),
        json.dumps({"concept": "y" * 2500}),
    ]) + "\n")
    cfg = tiny_config()
    summary = run(concepts, cfg)
    assert (summary.n_ok, summary.n_failed) == (1, 3)
    albums = {a["source"]: a for a in read_latest(cfg.out, "albums").to_pylist()}
    assert albums["c.jsonl:1"]["status"] == "ok"
    assert json.loads(albums["c.jsonl:1"]["inputs_json"]) == {"mood": "calm"}
    for line, words in ((2, "empty"), (3, "must be text"), (4, "2500 characters")):
        row = albums[f"c.jsonl:{line}"]
        assert row["status"] == "failed" and f"line {line}" in row["error"] and words in row["error"]


def test_failed_track_is_redone_alone_on_rerun(ray_session, tiny_config, tmp_path):
    """A re-run keeps the finished items of a failed album and redoes exactly the rest."""
    concepts = tmp_path / "c.txt"
    concepts.write_text("A clockwork kingdom rises\n")
    cfg = tiny_config()
    run(concepts, cfg)
    (album,) = read_latest(cfg.out, "albums").to_pylist()
    tracks = read_latest(cfg.out, "tracks").to_pylist()
    # simulate a lost track: its file is gone and the album failed
    os.remove(cfg.out / tracks[1]["path"])
    first_track_mtime = os.stat(cfg.out / tracks[0]["path"]).st_mtime_ns
    cover_mtime = os.stat(cfg.out / album["cover_path"]).st_mtime_ns
    summary = run(concepts, cfg)
    assert (summary.n_ok, summary.n_skipped) == (1, 0)
    assert os.stat(cfg.out / tracks[0]["path"]).st_mtime_ns == first_track_mtime  # not redone
    assert os.stat(cfg.out / album["cover_path"]).st_mtime_ns == cover_mtime
    assert (cfg.out / tracks[1]["path"]).exists()
    rows = read_latest(cfg.out, "tracks").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert rows[0]["run_id"] == tracks[0]["run_id"] != rows[1]["run_id"]


def test_killed_driver_resumes_without_duplicates(tiny_cache, tmp_path):
    """Kill the driver (and its local Ray) half way; the re-run completes the batch."""
    concepts = tmp_path / "c.txt"
    concepts.write_text("\n".join(f"Concept number {k}: {c}" for k in range(3) for c in CONCEPTS) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", str(out),
           "--tiny-cache", str(tiny_cache), "--tracks", "2", "--seconds", "1", "--steps", "2",
           "--music-batch", "2", "--image-batch", "1", "--address", "local"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    items = out / "items"  # a record per finished item (albumforge.records); album rows are buffered (parts)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if items.exists() and len(list(items.rglob("[!.]*.json"))) >= 6:  # two albums' worth of items
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    done_before = {p: p.read_bytes() for p in items.rglob("[!.]*.json")}  # a regenerated item gets a new record
    assert 6 <= len(done_before) < 27, "the kill should land half way"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    albums = read_latest(out, "albums").to_pylist()
    tracks = read_latest(out, "tracks").to_pylist()
    assert len(albums) == 9 and {a["status"] for a in albums} == {"ok"}
    assert len({a["album_id"] for a in albums}) == 9
    assert len(tracks) == 18 and len({(t["album_id"], t["track_no"]) for t in tracks}) == 18
    # items finished before the kill were not made again: the re-run wrote their albums'
    # rows from their records (a regenerated item would have a new record)
    assert {p: p.read_bytes() for p in done_before} == done_before
