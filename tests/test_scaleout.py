"""Pools that follow the cluster, on ``ray.cluster_utils.Cluster`` (issue 11).

Each run is the real CLI in a subprocess joining a head with 1 CPU and no GPU plus GPU
workers with logical GPUs; nodes join and leave while it runs. The tracks manifest's
``worker`` column names the node each item ran on; the run row records the placement.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from albumforge.parts import read_latest
from ray_jobs.placement import declared_per_card
from tests.test_faults import (
    _albums,
    _cmd,
    _concepts,
    _env,
    _injected,
    _records,
    _runs,
    _wait_for,
)

pytestmark = pytest.mark.slow

HEAD = {"num_cpus": 1, "num_gpus": 0, "include_dashboard": False}


def _cluster(monkeypatch=None, slow_s: float | None = None):
    """A head with 1 CPU and no GPU. ``slow_s``: every MusicActor call takes that much longer
    (tests/fault_inject, set in the nodes' environment: Ray workers inherit their raylet's,
    not the driver's)."""
    from ray.cluster_utils import Cluster

    if slow_s is not None:
        env = _injected(f"slow:*:{slow_s}:-")
        for key in ("PYTHONPATH", "ALBUMFORGE_TEST_FAULT"):
            monkeypatch.setenv(key, env[key])
    return Cluster(initialize_head=True, connect=False, head_node_args=HEAD)


def _track_nodes(out) -> set[str]:
    return {json.loads(t["worker"])["node"] for t in read_latest(out, "tracks").to_pylist() if t["worker"]}


def _publish_autoscaler_config(cluster, groups: list[tuple[dict, int]]) -> None:
    """What an autoscaler (v2, KubeRay) reports to the GCS: its node groups and their caps."""
    import ray
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    for k, (resources, most) in enumerate(groups):
        g = config.node_group_configs.add(name=f"group-{k}", max_count=most)
        g.resources.update(resources)
    GcsClient(address=cluster.gcs_address).internal_kv_put(
        ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), config.SerializeToString(), True,
        ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())


def test_a_node_added_mid_run_gets_actors_and_work(tiny_cache, tmp_path, monkeypatch):
    cluster = _cluster(monkeypatch, slow_s=2)
    try:
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        _publish_autoscaler_config(cluster, [({"CPU": 1}, 1), ({"CPU": 2, "GPU": 1}, 2)])
        out = tmp_path / "out"
        cmd = _cmd(_concepts(tmp_path, 6), out, tiny_cache, "--music-batch", "1", "--tracks", "3", address=cluster.address)
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: _records(out) >= 1, 300, proc)
            added = cluster.add_node(num_cpus=2, num_gpus=1)
            t_added = time.time()
            _, stderr = proc.communicate(timeout=400)
            t_end = time.time()
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
        assert {a["status"] for a in _albums(out).values()} == {"ok"}
        new_node = added.node_id[:12]
        assert new_node in _track_nodes(out), (new_node, _track_nodes(out))  # the new node made tracks
        res = json.loads(_runs(out)[-1]["resources_json"])
        pools = res["pools"]
        assert (pools["music_actors"], pools["music_max"], pools["grow_source"]) == (1, 2, "autoscaler (GCS)")
        on_new = [a for a in res["placement"]["actors"] if a["node"] == new_node and a["actor"] == "MusicActor"]
        assert on_new and all(len(a["gpu_ids"]) == 1 for a in on_new)
        made = [json.loads(t["worker"]) for t in read_latest(out, "tracks").to_pylist()]
        new = [w for w in made if w["node"] == new_node]
        print(f"\nFIGURE node added: its first music actor started {min(w['started'] for w in new) - t_added:.1f} s "
              f"and its first track finished {min(w['done'] for w in new) - t_added:.1f} s after it joined; "
              f"{len(new)} of {len(made)} tracks made there, the run ended {t_end - t_added:.0f} s after it joined")
    finally:
        cluster.shutdown()


def test_a_node_removed_mid_run_with_a_replacement_finishes_the_batch(tiny_cache, tmp_path, monkeypatch):
    cluster = _cluster(monkeypatch, slow_s=2)
    try:
        first = cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        cmd = _cmd(_concepts(tmp_path, 6), out, tiny_cache, "--music-batch", "1", "--tracks", "3", address=cluster.address)
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: _records(out) >= 2, 300, proc)
            cluster.remove_node(first)
            time.sleep(2)
            replacement = cluster.add_node(num_cpus=2, num_gpus=1)
            _, stderr = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, stderr[-3000:]
        albums = _albums(out)
        assert len(albums) == 6 and {a["status"] for a in albums.values()} == {"ok"}
        nodes = _track_nodes(out)
        assert {first.node_id[:12], replacement.node_id[:12]} <= nodes, nodes
        assert _runs(out)[-1]["status"] == "ok"
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("gpus", [2, 4])
def test_placement_matches_the_documented_layout(tiny_cache, tmp_path, gpus, monkeypatch):
    """One music and one image actor per card (README), in the run row; no card over its memory."""
    cluster = _cluster(monkeypatch, slow_s=1)
    try:
        cluster.add_node(num_cpus=gpus + 1, num_gpus=gpus)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        n = 4 * gpus  # enough albums that every actor gets work
        concepts = tmp_path / "c.txt"
        concepts.write_text("\n".join(f"Album number {k}, a study in {k} colours" for k in range(n)) + "\n")
        cmd = _cmd(concepts, out, tiny_cache, "--music-batch", "1", "--image-batch", "1", "--tracks", "2",
                   address=cluster.address)
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=500)
        assert result.returncode == 0, result.stderr[-3000:]
        res = json.loads(_runs(out)[-1]["resources_json"])
        pools, cards = res["pools"], res["placement"]["cards"]
        assert pools["music_actors"] == pools["image_actors"] == gpus
        assert pools["music_gpus"] > 0.5 and pools["music_gpus"] + pools["image_gpus"] <= 1.0
        assert len(cards) == gpus, cards  # every card used
        # the layout: never two actors of one kind on a card (an actor that got no work under
        # load is absent from the rows, so a card may show only its music actor)
        assert all(sorted(set(actors)) == sorted(actors) and "MusicActor" in actors for actors in cards.values()), cards
        assert max(declared_per_card(res["placement"], pools).values()) <= pools["card_gb"]
        print(f"\nFIGURE layout on {gpus} GPUs: {cards}")
    finally:
        cluster.shutdown()
