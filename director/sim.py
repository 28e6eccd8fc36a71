"""The sim director: the offline director's plan, delivered after an LLM's modelled latency.

Part of the sim engine (``actors.sim``): a scheduling model of the planner's lead over
the GPUs, never a test of a director. The latency is ``albumforge.costs.LLM`` for the
plan's track count, times ``sim.time_scale``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from albumforge.costs import LLM
from director.offline import OfflineDirector
from director.schema import AlbumPlan

if TYPE_CHECKING:  # the section type only: director/ does not import the driver
    from albumforge.config import PlanConfig


class SimDirector(OfflineDirector):
    def __init__(self, plan: "PlanConfig", time_scale: float = 1.0, sleep: Callable[[float], None] | None = None):
        super().__init__(plan)
        self.time_scale, self.sleep = float(time_scale), sleep  # sleep None: time.sleep

    def plan(self, album_id: str, concept: str, inputs: dict) -> tuple[AlbumPlan, dict]:
        plan, meta = super().plan(album_id, concept, inputs)
        modelled = LLM.plan_s(len(plan.tracks))
        (self.sleep or time.sleep)(modelled * self.time_scale)
        return plan, {**meta, "director": "sim", "modelled_latency_s": round(modelled, 3)}
