"""Who arrives when: the requests of one day."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.world import World

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Traffic:
    """The requests of a day, in time order."""

    day: int
    request_id: np.ndarray  # [R] int64, unique across days
    user_id: np.ndarray     # [R] int64
    ts: np.ndarray          # [R] int64, seconds since the start of the campaign


def traffic(world: World, day: int, rng: np.random.Generator) -> Traffic:
    """Each user sends Poisson(rate * activity) requests at times spread over the day."""
    rate = world.config.traffic.requests_per_user * world.user_activity
    counts = rng.poisson(rate)                                                 # [U]
    users = np.repeat(np.arange(world.n_users, dtype=np.int64), counts)        # [R]
    ts = day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, size=len(users))
    order = np.argsort(ts, kind="stable")
    request_id = day * 10_000_000 + np.arange(len(users), dtype=np.int64)
    return Traffic(day=day, request_id=request_id, user_id=users[order], ts=ts[order].astype(np.int64))
