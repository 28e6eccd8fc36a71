"""Pool bounds that follow the cluster and GPU shares that fit the card (ray_jobs/placement.py).

Fast: no Ray here (the runs on ``ray.cluster_utils.Cluster`` are in test_scaleout.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albumforge.config import RunConfig
from ray_jobs import placement as P

REPO = Path(__file__).resolve().parent.parent
HEAD = {"CPU": 1.0}  # a CPU-only head, as on the clusters users have


def _cfg(preset: str = "real", **overrides) -> RunConfig:
    return RunConfig.load(preset=preset, **overrides)


def _per_card_gb(shares: P.Shares, layout: list[list[str]]) -> list[float]:
    gb = {"music": shares.music_gb, "image": shares.image_gb}
    return [sum(gb[k] for k in card) for card in layout]


@pytest.mark.parametrize("cards", [2, 4])
@pytest.mark.parametrize("preset", ["real", "tiny"])
def test_default_layout_is_one_music_and_one_image_per_card(preset, cards):
    cfg = _cfg(preset)
    shares = P.gpu_shares(cfg, 16.0)
    assert shares.layout == "pair" and shares.music > 0.5 and shares.music + shares.image <= 1.0
    plan = P.plan_pools(cfg, [HEAD, {"CPU": 4.0 * cards, "GPU": float(cards)}])
    assert plan["music_actors"] == plan["image_actors"] == cards  # the head holds none
    layout = P.card_layout(shares, cards, cards, cards)
    assert layout == [["music", "image"]] * cards
    assert max(_per_card_gb(shares, layout)) <= 16.0


@pytest.mark.parametrize("model", sorted(P.MUSIC_MEMORY_GB))
@pytest.mark.parametrize("batch", [1, 2, 4, 8])
@pytest.mark.parametrize("cards", [2, 4])
def test_no_card_is_over_committed_whatever_the_model(model, batch, cards):
    cfg = _cfg(**{"music.model_id": f"facebook/{model}", "music.batch_size": batch})
    try:
        shares = P.gpu_shares(cfg, 16.0)
    except P.PlacementError as e:  # larger than a card: refused, named
        assert "music" in str(e) and "batch_size" in str(e)
        assert P.music_need_gb(cfg.music) + cfg.cluster.cuda_context_gb > 16.0
        return
    n = P.pairs_on_node({"CPU": 64.0, "GPU": float(cards)}, shares, cfg)
    assert n >= 1
    layout = P.card_layout(shares, cards, n, n)
    assert sum(len(c) for c in layout) == 2 * n  # every actor counted has a card
    assert all(gb <= 16.0 + 1e-9 for gb in _per_card_gb(shares, layout)), layout
    assert all(card.count("music") * shares.music_gb <= 16.0 for card in layout)
    # in the other start order too (images first, Ray's first fit): the shares alone keep memory safe
    free, kinds = [1.0] * cards, [[] for _ in range(cards)]
    for kind, share in [("image", shares.image)] * n + [("music", shares.music)] * n:
        slot = next((c for c in range(cards) if free[c] + 1e-9 >= share), None)
        if slot is not None:
            free[slot] -= share
            kinds[slot].append(kind)
    assert all(gb <= 16.0 + 1e-9 for gb in _per_card_gb(shares, kinds)), kinds


def test_readme_table_figures_are_the_declared_memory():
    def music_gb(model, batch):
        return P.music_need_gb(_cfg(**{"music.model_id": f"facebook/{model}", "music.batch_size": batch}).music)

    assert music_gb("musicgen-small", 8) == pytest.approx(5.0)
    assert music_gb("musicgen-medium", 8) == pytest.approx(13.0)
    assert music_gb("musicgen-medium", 4) == pytest.approx(8.0)
    assert music_gb("musicgen-large", 2) == pytest.approx(10.0)
    assert music_gb("musicgen-melody", 8) == pytest.approx(14.0)
    # medium at batch 4 shares a card with SD 1.5; large never does (README)
    assert P.gpu_shares(_cfg(**{"music.model_id": "facebook/musicgen-medium", "music.batch_size": 4}), 16).layout == "pair"
    assert P.gpu_shares(_cfg(**{"music.model_id": "facebook/musicgen-large", "music.batch_size": 2}), 16).layout == "apart"
    readme = (REPO / "README.md").read_text()
    assert "| `facebook/musicgen-medium` | 1.5B |" in readme and "~12–13 GB (batch 4: ~8 GB)" in readme


def test_unsafe_asks_are_refused_by_name():
    with pytest.raises(P.PlacementError, match=r"music\.num_gpus=0\.25 .* declares ~5\.5 GB"):
        P.gpu_shares(_cfg(**{"music.num_gpus": 0.25}), 16.0)
    with pytest.raises(P.PlacementError, match=r"music\.model_id='/models/my-finetune'.*music\.gpu_memory_gb"):
        P.gpu_shares(_cfg(**{"music.model_id": "/models/my-finetune"}), 16.0)
    shares = P.gpu_shares(_cfg(**{"music.model_id": "/models/my-finetune", "music.gpu_memory_gb": 7.5}), 16.0)
    assert shares.music_gb == 8.0 and shares.layout == "pair"
    assert P.gpu_shares(_cfg(**{"music.num_gpus": 1.0}), 16.0).music == 1.0  # a share the user sets is kept
    with pytest.raises(ValueError, match="music min_actors=3 must not exceed max_actors=2"):
        _cfg(**{"music.min_actors": 3, "music.max_actors": 2})


def test_card_memory_from_accelerator_type_or_config():
    cfg = _cfg()
    assert P.card_memory_gb(cfg, [{"GPU": 4, "accelerator_type:A10G": 1}]) == (24.0, "accelerator type")
    assert P.card_memory_gb(cfg, [{"GPU": 4}])[0] == 16.0
    assert P.card_memory_gb(_cfg(**{"cluster.gpu_memory_gb": 32}), [{"GPU": 4}]) == (32.0, "cluster.gpu_memory_gb")
    # a bigger card: medium at batch 8 shares it with SD 1.5, which a 16 GB card cannot
    medium = _cfg(**{"music.model_id": "facebook/musicgen-medium"})
    assert P.gpu_shares(medium, 24.0).layout == "pair" and P.gpu_shares(medium, 16.0).layout == "apart"


def test_sizing_counts_only_nodes_that_can_host_a_stage():
    cfg = _cfg("tiny")
    # a small GPU worker and a CPU-only head: 2 cards, 3 CPUs (0.5 + 0.5 a pair): 2 pairs
    plan = P.plan_pools(cfg, [HEAD, {"CPU": 3.0, "GPU": 2.0}])
    assert (plan["music_actors"], plan["image_actors"]) == (2, 2)
    # a worker whose CPUs hold one pair only: its second card does not count; nor a CPU-only node's CPUs
    assert P.plan_pools(cfg, [{"CPU": 16.0}, {"CPU": 1.5, "GPU": 2.0}])["nodes_hold"] == 1
    assert P.plan_pools(cfg, [{"CPU": 16.0}, {"CPU": 1.0, "GPU": 2.0}])["nodes_hold"] == 0
    # no autoscaler limits: room to grow (grow_factor x what the nodes hold now)
    assert (plan["music_min"], plan["music_max"], plan["grow_source"]) == (2, 4, "grow_factor 2")
    # CPU-only runs keep a CPU for reads and plans
    cpu = P.plan_pools(_cfg("tiny", gpus="none"), [{"CPU": 8.0, "GPU": 4.0}])
    assert (cpu["music_actors"], cpu["music_gpus"]) == (7, 0.0)


def test_pools_grow_to_what_the_launcher_config_allows(tmp_path):
    cfg = _cfg("real")
    limits = P.limits_from_launcher(REPO / "cluster.yaml")
    plan = P.plan_pools(cfg, [{"CPU": 8.0}], limits)  # only the head is up (min_workers 0)
    gpu_types = [(r, most) for r, most, head in limits.groups if not head and r.get("GPU")]
    assert gpu_types
    assert plan["music_gpus"] == 0.51  # GPU shares although no GPU node is up yet
    assert plan["music_actors"] == 1  # one pending actor: the autoscaler's cue to add a node
    assert plan["music_max"] >= 4 and plan["grow_source"].startswith("launcher config")
    # the global cap on workers wins over the per-type caps
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({
        "max_workers": 2, "head_node_type": "head",
        "available_node_types": {"head": {"resources": {"CPU": 4}},
                                 "x4": {"resources": {"CPU": 32, "GPU": 4}, "max_workers": 5},
                                 "x1": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 5}}}))
    small = P.plan_pools(cfg, [{"CPU": 4.0}], P.limits_from_launcher(path))
    assert small["music_max"] == 8  # two 4-GPU workers
    explicit = P.plan_pools(_cfg("real", **{"music.max_actors": 3, "music.min_actors": 2}), [{"CPU": 4.0}],
                            P.limits_from_launcher(path))
    assert (explicit["music_min"], explicit["music_max"], explicit["music_actors"]) == (2, 3, 2)


def test_strategy_carries_the_bounds():
    plan = P.plan_pools(_cfg("tiny"), [HEAD, {"CPU": 3.0, "GPU": 2.0}])
    s = P.strategy(plan, "music")
    assert (s.min_size, s.max_size, s.initial_size) == (2, 4, 2)


def test_pools_are_capped_by_their_bounds_not_ray_datas_budgets(caplog):
    """Ray Data's per-operator budgets off (a joining node gets no actor with them: test_scaleout);
    the switch is still in the installed Ray Data, and a Ray Data without it is named, not broken."""
    from types import SimpleNamespace

    from ray.data import DataContext

    ctx = DataContext()
    assert ctx.op_resource_reservation_enabled is True  # Ray Data's default
    P.grow_by_pool_bounds(ctx)
    assert ctx.op_resource_reservation_enabled is False
    other = SimpleNamespace()
    P.grow_by_pool_bounds(other)
    assert not vars(other) and "may not grow onto nodes that join" in caplog.text


def test_placement_record_lists_each_actor_and_card():
    rec = P.Placements()
    for actor, pid, gpu in [("MusicActor", 1, "0"), ("MusicActor", 1, "0"), ("ImageActor", 2, "0"),
                            ("MusicActor", 3, "1")]:
        rec.add({"worker": json.dumps({"actor": actor, "pid": pid, "node": "abc", "gpu_ids": [gpu]})})
    rec.add({"worker": ""})
    summary = rec.summary()
    assert len(summary["actors"]) == 3
    assert summary["cards"] == {"abc:0": ["ImageActor", "MusicActor"], "abc:1": ["MusicActor"]}
    assert P.declared_per_card(summary, {"music_gb": 5.5, "image_gb": 6.5}) == {"abc:0": 12.0, "abc:1": 5.5}
