"""The sim engine (a V100 cost model) and the GPU busy figures of a run.

The sim's sleeps are checked by what it asked to sleep (an injected ``time.sleep``),
never by wall time; the busy figures by what must hold (busy <= wall, items add up).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from actors import sim
from albumforge import costs
from albumforge.busy import BusyLog, cards, totals, union
from albumforge.parts import read_latest
from albumforge.rows import KIND_COVER, KIND_TRACK, STATUS_OK, job_row

SCALE = 0.01


@pytest.fixture
def slept(monkeypatch):
    """Every sleep the sim asks for, in real seconds (nothing actually sleeps)."""
    asked: list[float] = []
    monkeypatch.setattr(sim.time, "sleep", asked.append)
    return asked


def _batch(rows: list[dict]) -> dict:
    return {k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None)
            for k in rows[0]}


def test_music_sleeps_match_the_table_window_by_window(slept, tmp_path):
    from actors.music import MusicActor
    from albumforge.config import RunConfig

    cfg = RunConfig.load(preset="sim", **{"music.model_id": "facebook/musicgen-medium", "music.batch_size": 2})
    actor = MusicActor(str(tmp_path), cfg.music, str(tmp_path), time_scale=SCALE)
    rows = [job_row("a1", KIND_TRACK, k, 2, f"prompt {k}", d, 0) for k, d in ((1, 40.0), (2, 20.0))]
    out = actor(_batch(rows))
    table = costs.MUSIC["musicgen-medium"]
    delay = sim.CODEBOOKS - 1
    # load; window 1: 30 s for both tracks (1500 frames + the delay pattern's steps); window 2:
    # the 40 s track alone, 10 s new after 12 s of context (600 frames of prompt)
    expected = [table.load_s,
                table.window_s(1500 + delay, 0, 2, 50, guidance=True),
                table.window_s(500 + delay, 600, 1, 50, guidance=True)]
    assert slept == pytest.approx([e * SCALE for e in expected])
    assert list(out["status"]) == [STATUS_OK, STATUS_OK]
    assert [round(float(s), 3) for s in out["actual_s"]] == [40.0, 20.0]
    note = json.loads(out["busy"][0])
    assert note["kind"] == "MusicActor" and len(note["spans"]) == 2 and note["started"] <= note["ready"]
    assert all(a <= b for a, b in note["spans"]) and note["work"][0] <= note["spans"][0][0]


def test_image_sleeps_match_the_table_and_images_have_the_asked_size(slept, tmp_path):
    from actors.image import ImageActor
    from albumforge.config import RunConfig

    cfg = RunConfig.load(preset="sim", **{"image.batch_size": 2, "image.steps": 30, "image.width": 512,
                                          "image.height": 384})
    actor = ImageActor(str(tmp_path), cfg.image, str(tmp_path), time_scale=SCALE)
    rows = [job_row(f"a{k}", KIND_COVER, 0, 1, f"cover {k}", 0.0, 0) for k in range(3)]
    out = actor(_batch(rows))
    expected = [costs.IMAGE.load_s, costs.IMAGE.call_s(30, 2, 512, 384, guidance=True),
                costs.IMAGE.call_s(30, 1, 512, 384, guidance=True)]
    assert slept == pytest.approx([e * SCALE for e in expected])
    assert list(out["status"]) == [STATUS_OK] * 3
    assert (int(out["width"][0]), int(out["height"][0])) == (512, 384)


def test_the_table_keeps_its_published_anchor_and_names_unknown_models():
    # SD 1.5, 512^2, 50 steps, guidance on: 3.6 s on a V100-class card (FIELD-NOTES)
    assert costs.IMAGE.call_s(50, 1, 512, 512, guidance=True) == pytest.approx(3.6)
    small, large = costs.MUSIC["musicgen-small"], costs.MUSIC["musicgen-large"]
    assert small.window_s(1503, 0, 1, 50, True) < large.window_s(1503, 0, 1, 50, True)
    with pytest.raises(ValueError, match="musicgen-huge"):
        costs.music_cost("facebook/musicgen-huge")


def test_sim_director_waits_the_modelled_llm_latency(slept):
    from albumforge.config import RunConfig
    from director.sim import SimDirector

    cfg = RunConfig.load(preset="sim", **{"plan.tracks_per_album": 5})
    plan, meta = SimDirector(cfg.plan, time_scale=SCALE).plan("abc123", "a jazz bar in the rain", {})
    assert slept == pytest.approx([costs.LLM.plan_s(len(plan.tracks)) * SCALE])
    assert meta["director"] == "sim" and len(plan.tracks) == 5


def test_sim_config_refuses_what_it_does_not_model():
    from albumforge.config import RunConfig

    with pytest.raises(ValueError, match="hires"):
        RunConfig.load(preset="sim", **{"image.hires_scale": 2.0})
    with pytest.raises(ValueError, match="time_scale"):
        RunConfig.load(preset="sim", **{"sim.time_scale": 0})


def _note(actor, kind, group, spans, node="n1", gpus=("0",), started=0.0):
    return json.dumps({"actor": actor, "kind": kind, "node": node, "gpu_ids": list(gpus), "started": started,
                       "ready": started + 1, "group": group, "spans": spans, "work": [spans[0][0], spans[-1][1]],
                       "peak_gpu_bytes": None})


def test_busy_log_merges_spans_per_actor_and_per_card():
    log = BusyLog()
    for _ in range(2):  # two rows of one group: counted once
        log.add(_note("m", "MusicActor", 1, [[2, 5], [4, 6]]))
    log.add(_note("m", "MusicActor", 2, [[8, 9]]), ok=False)
    log.add(_note("i", "ImageActor", 1, [[5, 7]], started=1.0))
    log.add(_note("x", "ImageActor", 1, [[1, 2]], gpus=()))  # CPU only: no card
    actors = {a["actor"]: a for a in log.summary(end=10.0)}
    m = actors["m"]
    assert (m["busy_s"], m["wall_s"], m["batches"], m["items"], m["failed"], m["load_s"]) == (5.0, 10.0, 2, 2, 1, 1.0)
    assert union([[2, 5], [4, 6], [8, 9]]) == [[2, 6], [8, 9]]
    per_card = cards(list(actors.values()), end=10.0)
    assert list(per_card) == ["n1/0"] and per_card["n1/0"]["busy_s"] == 6.0  # [2,7] + [8,9]
    assert totals(list(actors.values()), 10.0) == {"gpu_busy_s": 6.0, "gpu_held_s": 10.0}


@pytest.mark.slow
def test_a_sim_run_records_busy_figures_that_add_up(ray_session, tmp_path):
    from albumforge.config import RunConfig
    from ray_jobs.generate import run

    concepts = tmp_path / "c.txt"
    concepts.write_text("neon rain\ndesert caravan\nlighthouse winter\n")
    cfg = RunConfig.load(preset="sim", **{"out": tmp_path / "out", "plan.tracks_per_album": 2,
                                          "plan.track_seconds": 10.0, "sim.time_scale": 0.001,
                                          "music.batch_size": 2})
    summary = run(concepts, cfg)
    assert summary.n_ok == 3
    row = read_latest(cfg.out, "runs").to_pylist()[0]
    actors = json.loads(row["actors_json"])
    assert {a["kind"] for a in actors} == {"MusicActor", "ImageActor"}
    for a in actors:
        assert 0 < a["busy_s"] <= a["wall_s"] and a["batches"] >= 1 and a["calls"] >= a["batches"]
        assert a["node"] and a["gpu_ids"] and a["peak_gpu_bytes"] is None  # no CUDA here
    made = {"MusicActor": summary.n_tracks, "ImageActor": 3}  # tracks, covers
    for kind, n in made.items():
        assert sum(a["items"] for a in actors if a["kind"] == kind) == n
    assert 0 < row["gpu_busy_s"] <= row["gpu_held_s"]
