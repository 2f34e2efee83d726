"""A day's plan: its requests, drawn once from the world, and the arm that serves each."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.ab import Assigner
from components.serving import ArmConfig
from sim.rng import shard_of, stream
from sim.traffic import Traffic, traffic
from story.campaign import Campaign
from story.world import state_of, world_of

BOOTSTRAP_ARM = "logging"
BOOTSTRAP_EXPERIMENT = "bootstrap"


def arms_of_day(c: Campaign, day: int) -> tuple[str, dict[str, ArmConfig]]:
    """Day 0 is served by the logging policy alone; later days by the experiment's arms."""
    if day == 0:
        return BOOTSTRAP_EXPERIMENT, {BOOTSTRAP_ARM: c.experiment.logging_policy}
    return c.experiment.name, dict(c.experiment.arms)


def control_of_day(c: Campaign, day: int) -> str:
    return c.experiment.control if day > 0 else BOOTSTRAP_ARM


@dataclass(frozen=True)
class DayPlan:
    """The requests of a day in time order, each with its arm; a pure function of the seed and the
    day's world state, drawn once and shared by every shard and by the day's tables."""

    traffic: Traffic
    experiment: str
    layer: str
    arms: dict[str, ArmConfig]
    control: str
    assigned: np.ndarray   # [R] arm of each request (or holdout / unenrolled)
    enrolled: np.ndarray   # [R] experiment each request counts for

    @property
    def day(self) -> int:
        return self.traffic.day

    def __len__(self) -> int:
        return len(self.traffic.request_id)

    def served_by(self, assigned: np.ndarray) -> np.ndarray:
        """The arm whose pipeline serves each request: held-out and unenrolled users get control's."""
        return np.where(np.isin(assigned, list(self.arms)), assigned, self.control).astype(object)

    def shard_rows(self, index: int, n_shards: int) -> np.ndarray:
        """Rows of the requests whose user hashes to shard `index` of `n_shards`."""
        return np.flatnonzero(shard_of(self.traffic.user_id, n_shards) == index)

    def save(self, path: Path) -> None:
        """For shards served in other processes: the arrays only; the configs come from the manifest."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        t = self.traffic
        with open(tmp, "wb") as f:
            np.savez(f, request_id=t.request_id, user_id=t.user_id, ts=t.ts,
                     assigned=self.assigned.astype(str), enrolled=self.enrolled.astype(str))
        tmp.replace(path)

    @classmethod
    def load(cls, c: Campaign, day: int, path: Path) -> DayPlan:
        experiment, arms = arms_of_day(c, day)
        with np.load(path) as z:
            tr = Traffic(day, z["request_id"], z["user_id"], z["ts"])
            assigned, enrolled = z["assigned"].astype(object), z["enrolled"].astype(object)
        return cls(tr, experiment, layer_of_day(c, day), arms, control_of_day(c, day), assigned, enrolled)


def layer_of_day(c: Campaign, day: int) -> str:
    return c.experiment.layer if day > 0 else BOOTSTRAP_EXPERIMENT


def plan_day(c: Campaign, day: int) -> DayPlan:
    """Draw the day's traffic from the world as the day starts, and assign each request its arm."""
    tr = traffic(world_of(c, day), state_of(c, day), day, stream(c.scenario.seed, day, "traffic"))
    experiment, arms = arms_of_day(c, day)
    if day == 0:
        assigned = np.full(len(tr.user_id), BOOTSTRAP_ARM, dtype=object)
        enrolled = np.full(len(tr.user_id), experiment, dtype=object)
    else:
        exp = c.experiment
        a = Assigner([exp.allocation()], exp.holdout).assign(tr.user_id, exp.layer)
        assigned, enrolled = a.arm, a.experiment
    return DayPlan(tr, experiment, layer_of_day(c, day), arms, control_of_day(c, day),
                   np.asarray(assigned, dtype=object), np.asarray(enrolled, dtype=object))
