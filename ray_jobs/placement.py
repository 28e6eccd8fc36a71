"""Where the actors go: pools that follow the cluster, GPU shares that fit the card.

Two answers, worked out before the stream starts and kept in the run row
(``resources_json``: ``pools``, and ``placement``, where each actor really ran):

1. **How many actors** (``plan_pools``). Each pool is an ``ActorPoolStrategy(min_size,
   max_size, initial_size)``: it starts with what the nodes up now can hold, Ray Data adds
   actors while work queues up (a pending actor is what makes an autoscaler add a node) and
   releases idle ones down to ``min_actors``; an actor whose node left is restarted where
   a node has room. Growth is bounded by ``max_size`` and by where Ray can place an actor,
   not by Ray Data's per-operator budgets (``grow_by_pool_bounds``: they kept a node that
   joined mid-run from getting an actor). ``max_size`` is what the cluster can grow to:
   the autoscaler's node types times their ``max_workers`` (the GCS's autoscaler config, or
   the launcher YAML that ``ray up`` leaves on the head), else ``cluster.grow_factor`` times
   what the nodes hold now; ``min_size`` is what the nodes up at the start hold (so warm
   models are not unloaded in a lull). Only nodes that can host a stage count: a node's actors are the
   music+image pairs its cards *and* its CPUs hold, so a CPU-only head adds nothing.

2. **How much of a card each actor asks for** (``gpu_shares``). Each model declares its
   GPU memory (``music.gpu_memory_gb`` / ``image.gpu_memory_gb``; defaults: the README's
   table, scaled to the batch and window or image size), plus a CUDA context per process;
   the share is that memory over the card's (``cluster.gpu_memory_gb``, else from the
   accelerator type Ray reports, else 16 GB: V100-16GB).

   Why fractions derived from memory, and not placement groups or custom resources:
   Ray grants a fractional GPU from one card that has that much share left and never
   grants more than 1.0 of a card, so when every share is at least its declared memory
   over the card's, the actors on any card never declare more than the card holds,
   whatever order they start in and on any node that joins later. Placement groups
   reserve bundles up front: they do not grow with an autoscaling cluster, a lost node
   takes its bundles with it, and Ray Data gives every actor of a pool the same options,
   so a pool cannot name one bundle per actor. Custom resources are per node, not per
   card: the GPU id an actor gets would still be Ray's choice.

   The layout on a card (``card_layout``, the README's table): when a music and an image
   actor fit one card together, music asks for more than half (so no two music actors,
   the slow stage, ever share a card) and image for the rest of the card (so nothing else
   squeezes in): each card holds one music and one image actor. The music pool's first
   actors are up before the image pool asks (``start_in_order``) and Ray fills cards
   first-fit, so the music actors take one card each and the image actors fill the rest.
   (Actors added later come one at a time per pool; should two image actors ever share a
   card, one music actor waits: still within memory, only slower.) When the pair does
   not fit one card, each asks for its own need and cards hold what first fit gives them.
   Shares the user sets (``num_gpus``) are kept, and refused when below the declared need.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("albumforge")

# MusicGen (fp16), the README's table as a line through its figures (estimates, 30 s window,
# guidance 3): GB at batch 0 (weights, EnCodec decoding, buffers) and GB per batch item (the
# decoder's key/value cache for 2 sequences of ~1,500 positions). small: 5 GB at batch 8;
# medium: 13 at 8, 8 at 4; large: 19 at 8, 10 at 2; melody: 14 at 8. The per-item part scales
# with window_s / 30 and halves without guidance. Keyed by the id's last part, so a local
# folder named like the model matches.
MUSIC_MEMORY_GB: dict[str, tuple[float, float]] = {
    "musicgen-small": (3.0, 0.25),
    "musicgen-medium": (3.0, 1.25),
    "musicgen-large": (7.0, 1.5),
    "musicgen-melody": (4.0, 1.25),
}
# Stable Diffusion 1.x (fp16): UNet + VAE + text encoder + the CLIP scorer, and the whole
# actor at 512x512, batch 4, guidance on (an estimate; the activations scale with batch x
# pixels of the largest pass, hires included). Every image model here is SD 1.x.
IMAGE_MEMORY_GB: tuple[float, float] = (2.5, 6.0)
# Card memory by the accelerator type Ray reports (``accelerator_type:<T>``): the smaller
# variant where a type comes in two sizes (V100 16/32 GB, A100 40/80 GB).
ACCELERATOR_MEMORY_GB: dict[str, float] = {
    "V100": 16, "T4": 16, "P100": 16, "A10G": 24, "L4": 24, "A10": 24, "A100": 40, "A100-40G": 40,
    "A100-80G": 80, "L40S": 48, "H100": 80, "H200": 141,
}
DEFAULT_CARD_GB = 16.0  # V100-16GB (AWS p3)
EXCLUSIVE = 0.51  # a share above half a card: two such actors never share one
STEP = 0.01  # shares are rounded up to this
START_WAIT_S = 1800  # loading a pool's first models (weights from a shared cache) may take minutes
STAGE_CPU_RESERVE = 0.5  # per node: the planner actor and the explode tasks (0.25 CPU each) may land anywhere,
#   and a pool's first actors must all fit (start_in_order waits for them)


class PlacementError(ValueError):
    """The run cannot place its actors safely (a model larger than a card, a share below its need)."""


# ---------------------------------------------------------------- declared memory
def music_need_gb(m) -> float:
    """GB one music actor's model declares (``music.gpu_memory_gb`` or the table)."""
    if m.gpu_memory_gb is not None:
        return float(m.gpu_memory_gb)
    name = str(m.model_id).rstrip("/").rsplit("/", 1)[-1]
    if name not in MUSIC_MEMORY_GB:
        raise PlacementError(f"music.model_id={m.model_id!r}: its GPU memory is not known (known: "
                             f"{sorted(MUSIC_MEMORY_GB)}): set music.gpu_memory_gb")
    fixed, per_item = MUSIC_MEMORY_GB[name]
    return fixed + per_item * m.batch_size * m.window_s / 30 * (1.0 if m.guidance_scale > 1 else 0.5)


def image_need_gb(i) -> float:
    """GB one image actor's model declares (``image.gpu_memory_gb`` or SD 1.x's estimate)."""
    if i.gpu_memory_gb is not None:
        return float(i.gpu_memory_gb)
    w, h = i.hires_size() if i.hires_scale > 1 else (i.width, i.height)
    weights, at = IMAGE_MEMORY_GB
    scale = i.batch_size / 4 * (w * h) / (512 * 512) * (1.0 if i.guidance_scale > 1 else 0.5)
    return weights + (at - weights) * scale


def card_memory_gb(cfg, nodes: list[dict]) -> tuple[float, str]:
    """One card's memory and where the figure came from."""
    if cfg.cluster.gpu_memory_gb is not None:
        return float(cfg.cluster.gpu_memory_gb), "cluster.gpu_memory_gb"
    known = [ACCELERATOR_MEMORY_GB[key.split(":", 1)[1]] for r in nodes for key in r
             if key.startswith("accelerator_type:") and key.split(":", 1)[1] in ACCELERATOR_MEMORY_GB]
    if known:
        return float(min(known)), "accelerator type"
    return DEFAULT_CARD_GB, "default (V100-16GB)"


# ---------------------------------------------------------------- shares and layout
@dataclass(frozen=True)
class Shares:
    """Per-actor GPU shares and the memory behind them."""

    music: float
    image: float
    music_gb: float  # declared, CUDA context included
    image_gb: float
    card_gb: float
    layout: str  # pair: one music + one image per card | apart: each stage its own need | set: user's shares


def _up(x: float) -> float:
    return round(math.ceil(x / STEP - 1e-9) * STEP, 4)


def gpu_shares(cfg, card_gb: float) -> Shares:
    """Shares whose declared memory never exceeds a card, laid out as the module doc says."""
    m, i, ctx = cfg.music, cfg.image, cfg.cluster.cuda_context_gb
    music_gb, image_gb = music_need_gb(m) + ctx, image_need_gb(i) + ctx
    need = {"music": _up(music_gb / card_gb), "image": _up(image_gb / card_gb)}
    for section, gb in (("music", music_gb), ("image", image_gb)):
        if need[section] > 1 and getattr(cfg, section).num_gpus != 0:
            raise PlacementError(
                f"{section}: ~{gb:.1f} GB declared (model, batch_size, CUDA context) is more than one "
                f"{card_gb:g} GB card: lower {section}.batch_size, or set {section}.gpu_memory_gb / "
                "cluster.gpu_memory_gb if the estimate or the card is wrong")
    if need["music"] + need["image"] <= 1 and need["image"] <= 1 - EXCLUSIVE:
        music = max(need["music"], EXCLUSIVE)
        shares = {"music": music, "image": round(1 - music, 4)}
        layout = "pair"
    else:
        shares, layout = dict(need), "apart"
    for section in ("music", "image"):
        asked = getattr(cfg, section).num_gpus
        if asked is None:
            continue
        if 0 < asked < need[section] - 1e-9:
            gb = music_gb if section == "music" else image_gb
            raise PlacementError(
                f"{section}.num_gpus={asked:g} is {asked * card_gb:.1f} GB of a {card_gb:g} GB card, but the "
                f"actor declares ~{gb:.1f} GB: ask for at least {need[section]:g}, or leave it unset (derived)")
        shares[section], layout = float(asked), "set"
    return Shares(shares["music"], shares["image"], round(music_gb, 2), round(image_gb, 2), card_gb, layout)


def card_layout(shares: Shares, cards: int, n_music: int, n_image: int) -> list[list[str]]:
    """What Ray's first fit puts on each of ``cards`` cards when the music actors start first.

    Actors with a zero share use no card and are not listed; ones that fit nowhere neither.
    """
    free = [1.0] * cards
    layout: list[list[str]] = [[] for _ in range(cards)]
    for kind, share, n in (("music", shares.music, n_music), ("image", shares.image, n_image)):
        if share <= 0:
            continue
        for _ in range(n):
            for c in range(cards):
                if free[c] + 1e-9 >= share:
                    free[c] -= share
                    layout[c].append(kind)
                    break
    return layout


def pairs_on_node(resources: dict, shares: Shares | None, cfg) -> int:
    """Music+image actor pairs one node can hold: its cards (with GPUs) and its CPUs."""
    cpus = float(resources.get("CPU", 0))
    by_cpu = int(max(0.0, cpus - STAGE_CPU_RESERVE) // (cfg.music.num_cpus + cfg.image.num_cpus) + 1e-9)
    if shares is None:
        return by_cpu
    cards = int(float(resources.get("GPU", 0)) + 1e-9)
    if not cards and (shares.music > 0 or shares.image > 0):
        return 0
    n = 0
    while n < by_cpu:
        placed = card_layout(shares, cards, n + 1, n + 1)
        want = (n + 1) * ((shares.music > 0) + (shares.image > 0))
        if sum(len(c) for c in placed) < want:
            break
        n += 1
    return n


# ---------------------------------------------------------------- what the cluster can grow to
@dataclass(frozen=True)
class Limits:
    """Node types the autoscaler may start: (resources of one node, most nodes (None: no cap), is the head)."""

    source: str
    groups: tuple[tuple[dict, int | None, bool], ...]
    max_workers: int | None = None  # the launcher's cap on worker nodes of all types together


def limits_from_gcs() -> Limits | None:
    """The autoscaler's node groups as the GCS holds them (autoscaler v2, KubeRay), if any."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 (an older GCS, no autoscaler: no limits known)
        return None
    if config is None or not config.node_group_configs:
        return None
    groups = tuple((dict(g.resources), None if g.max_count < 0 else int(g.max_count), False)
                   for g in config.node_group_configs)
    return Limits("autoscaler (GCS)", groups)


def limits_from_launcher(path: Path) -> Limits:
    """The node types of a Ray launcher YAML (``cluster.yaml``, ``~/ray_bootstrap_config.yaml``)."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PlacementError(f"cluster.autoscaler_config={str(path)!r}: cannot read it ({e})") from None
    types = config.get("available_node_types") or {}
    if not types:
        raise PlacementError(f"cluster.autoscaler_config={str(path)!r}: no available_node_types")
    head, top = config.get("head_node_type"), config.get("max_workers")
    groups = tuple((dict(t.get("resources") or {}), 1 if name == head else int(t.get("max_workers", top or 0)),
                    name == head) for name, t in types.items())
    return Limits(f"launcher config {path}", groups, None if top is None else int(top))


def find_limits(cfg) -> Limits | None:
    if cfg.cluster.autoscaler_config is not None:
        return limits_from_launcher(cfg.cluster.autoscaler_config)
    found = limits_from_gcs()
    if found is not None:
        return found
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()  # `ray up` leaves it on the head
    return limits_from_launcher(bootstrap) if bootstrap.is_file() else None


def most_pairs(limits: Limits, shares: Shares | None, cfg) -> int | None:
    """Pairs the largest cluster the limits allow can hold (None: no cap)."""
    per_node = sorted(((pairs_on_node(r, shares, cfg), most, head) for r, most, head in limits.groups),
                      key=lambda x: -x[0])
    if any(n > 0 and most is None for n, most, _ in per_node):
        return None
    total, workers_left = 0, limits.max_workers
    for n, most, head in per_node:  # under the launcher's cap on workers: the most useful types first
        count = most if head or workers_left is None else min(most, workers_left)
        if not head and workers_left is not None:
            workers_left -= count
        total += n * count
    return total


# ---------------------------------------------------------------- the plan
def observe(cfg) -> tuple[list[dict], Limits | None]:
    """The live nodes' resources and the autoscaler's limits (needs a connected Ray)."""
    import ray

    nodes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
    return nodes, find_limits(cfg)


def plan_pools(cfg, nodes: list[dict], limits: Limits | None = None) -> dict:
    """Pool bounds and per-actor asks for nodes ``nodes`` (resources of each live node).

    Keys: ``music_actors``/``image_actors`` (initial size), ``*_min``, ``*_max`` (None: no cap),
    ``*_gpus`` (share per actor), and what they came from.
    """
    gpu_nodes = [r for r in nodes if float(r.get("GPU", 0)) > 0]
    can_grow_gpus = limits is not None and any(float(r.get("GPU", 0)) > 0 for r, _, _ in limits.groups)
    use_gpus = cfg.gpus == "auto" and (bool(gpu_nodes) or can_grow_gpus)
    plan: dict = {"cluster_gpus": sum(float(r.get("GPU", 0)) for r in nodes),
                  "cluster_cpus": sum(float(r.get("CPU", 0)) for r in nodes)}
    shares = None
    if use_gpus:
        card_gb, card_source = card_memory_gb(cfg, gpu_nodes or [r for r, _, _ in limits.groups])
        shares = gpu_shares(cfg, card_gb)
        now = sum(pairs_on_node(r, shares, cfg) for r in nodes)
        plan.update(music_gpus=shares.music, image_gpus=shares.image, layout=shares.layout,
                    music_gb=shares.music_gb, image_gb=shares.image_gb, card_gb=card_gb, card_source=card_source)
    else:
        per_node = sum(pairs_on_node(r, None, cfg) for r in nodes)
        pair_cpus = cfg.music.num_cpus + cfg.image.num_cpus
        now = max(1, min(per_node, int((plan["cluster_cpus"] - 1) // pair_cpus)))  # a CPU for reads and plans
        plan.update(music_gpus=0.0, image_gpus=0.0, layout="cpu")
    if limits is not None:
        most, source = most_pairs(limits, shares, cfg), limits.source
    else:
        most, source = max(1, math.ceil(now * cfg.cluster.grow_factor)), f"grow_factor {cfg.cluster.grow_factor:g}"
    plan["nodes_hold"], plan["grow_to"], plan["grow_source"] = now, most, source
    for stage, section in (("music", cfg.music), ("image", cfg.image)):
        hi = section.max_actors if section.max_actors is not None else most
        start = max(1, now) if hi is None else max(1, min(now, hi))
        lo = section.min_actors if section.min_actors is not None else start
        if hi is not None:
            hi = max(hi, lo)
        start = max(start, lo)
        plan[f"{stage}_min"], plan[f"{stage}_max"], plan[f"{stage}_actors"] = lo, hi, start
    return plan


def start_in_order(ctx, cfg) -> None:
    """Make Ray Data start each pool only once the one before it is up (music, then image).

    Ray Data starts operators in stream order but creates their actors asynchronously, and
    seen on a 2-GPU node: both image actors (0.49) were granted card 0 first, then one music
    actor (0.51) card 1, and the second music actor could never be placed. Waiting for each
    pool's first actors (``wait_for_min_actors_s``) makes the music actors take one card
    each before any image actor asks. The wait covers loading the models (an actor is up
    when its constructor returns), so it is long: START_WAIT_S past ``faults.placement_timeout_s``.
    A pool that no live node can hold still ends the run after ``placement_timeout_s``
    (``watch.PlacementWatch`` runs beside the wait).
    """
    ctx.wait_for_min_actors_s = max(1, math.ceil(cfg.faults.placement_timeout_s + START_WAIT_S))


def grow_by_pool_bounds(ctx) -> None:
    """Let each pool grow to its ``max_size`` when its work queues up, whatever Ray Data's budgets say.

    Ray Data 2.60 adds an actor only when the pool's utilisation passes its threshold *and*
    the operator's resource budget holds one more actor. That budget is cut from what Ray
    Data's autoscaling coordinator reserves for the run: the bundles the run asked for plus
    each node's leftover rounded *down* to whole units (a node with 0.49 of a card free counts
    none of it), refreshed every 20 s, and the shared part goes to the downstream stage first.
    Seen with one card per node and shares 0.51/0.49: after a second GPU node joined, Ray Data
    counted 1.51 GPUs, the image stage took 0.49 of the 0.51 left and the music stage was
    budgeted 0.02, so it never added the actor the new card could hold ("exceeded resource
    limits"). The pool bounds (``plan_pools``: what the cluster can grow to) are the cap here,
    and Ray Core places each actor where a card has room (a pending one waits for a node, and
    is what makes an autoscaler add one), so the per-operator budgets are turned off.
    """
    if not hasattr(ctx, "op_resource_reservation_enabled"):  # a Ray Data without the switch
        log.warning("this Ray Data has no DataContext.op_resource_reservation_enabled: actor pools may "
                    "not grow onto nodes that join mid-run")
        return
    ctx.op_resource_reservation_enabled = False


def strategy(plan: dict, stage: str):
    """The ``ActorPoolStrategy`` of ``stage`` (music | image) from ``plan_pools``."""
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=plan[f"{stage}_min"], max_size=plan[f"{stage}_max"],
                             initial_size=plan[f"{stage}_actors"])


# ---------------------------------------------------------------- where the actors ran
class Placements:
    """Each actor the rows name (their ``worker`` JSON): node and GPU ids, for the run row."""

    def __init__(self):
        self.actors: dict[tuple, dict] = {}

    def add(self, row: dict) -> None:
        raw = row.get("worker")
        if not raw:
            return
        try:
            w = json.loads(raw)
        except (TypeError, ValueError):
            return
        key = (w.get("actor"), w.get("pid"), w.get("node"))
        if key not in self.actors:
            self.actors[key] = {"actor": w.get("actor"), "pid": w.get("pid"), "node": w.get("node"),
                                "gpu_ids": [str(g) for g in w.get("gpu_ids") or []], "rows": 0}
        self.actors[key]["rows"] += 1

    def summary(self) -> dict:
        """``actors``: one entry per actor process; ``cards``: "<node>:<gpu id>" -> its actors."""
        actors = sorted(self.actors.values(), key=lambda a: (str(a["node"]), a["gpu_ids"], str(a["actor"])))
        cards: dict[str, list[str]] = {}
        for a in actors:
            for g in a["gpu_ids"]:
                cards.setdefault(f"{a['node']}:{g}", []).append(a["actor"])
        return {"actors": actors, "cards": cards}


def declared_per_card(placement: dict, plan: dict) -> dict[str, float]:
    """GB the actors on each card declared (from a run row's placement and pools)."""
    gb = {"MusicActor": plan.get("music_gb", 0.0), "ImageActor": plan.get("image_gb", 0.0)}
    return {card: round(sum(gb.get(a, 0.0) for a in names), 2) for card, names in placement["cards"].items()}


def describe_pools(plan: dict) -> str:
    """One log line: pools and shares."""
    def bound(stage):
        hi = plan[f"{stage}_max"]
        return f"{plan[f'{stage}_min']}..{'any' if hi is None else hi} (start {plan[f'{stage}_actors']})"

    line = f"actor pools: music {bound('music')}, image {bound('image')}; grow limit from {plan['grow_source']}"
    if plan.get("layout") != "cpu":
        line += (f"; per actor: music {plan['music_gpus']:g} GPU (~{plan['music_gb']:g} GB), image "
                 f"{plan['image_gpus']:g} GPU (~{plan['image_gb']:g} GB) of a {plan['card_gb']:g} GB card "
                 f"({plan['card_source']}), layout {plan['layout']}")
    return line

