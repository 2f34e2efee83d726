"""Who arrives when: the sessions and requests of one day."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import TrafficConfig
from sim.rng import shard_of
from sim.state import WorldState
from sim.world import World

SECONDS_PER_DAY = 86_400
REQUESTS_PER_DAY_MAX = 1_000_000_000   # request ids are day * this + rank within the day


@dataclass(frozen=True)
class Traffic:
    """The requests of a day, in time order."""

    day: int
    request_id: np.ndarray  # [R] int64, unique across days
    user_id: np.ndarray     # [R] int64
    ts: np.ndarray          # [R] int64, seconds since the start of the campaign

    def select(self, mask: np.ndarray) -> "Traffic":
        return Traffic(self.day, self.request_id[mask], self.user_id[mask], self.ts[mask])

    def shard(self, index: int, n_shards: int) -> "Traffic":
        """The requests of the users whose id hashes to shard `index` of `n_shards`."""
        return self.select(shard_of(self.user_id, n_shards) == index)


def hourly_profile(cfg: TrafficConfig) -> np.ndarray:
    """Share of a day's sessions starting in each hour: [24], a cosine peaking at `peak_hour`."""
    hours = np.arange(24)
    w = 1.0 + cfg.diurnal_amplitude * np.cos(2 * np.pi * (hours - cfg.peak_hour) / 24)
    return w / w.sum()


def traffic(world: World, state: WorldState, day: int, rng: np.random.Generator) -> Traffic:
    """Active users open Poisson(sessions * activity) sessions, at hours drawn from the day's
    profile; a session is 1 + Poisson(requests_per_session - 1) requests spaced by exponential gaps."""
    cfg = world.config.traffic
    active = np.flatnonzero(state.user_active)                                       # [A]
    sessions = rng.poisson(cfg.sessions_per_user * world.user_activity[active])      # [A]
    session_user = np.repeat(active.astype(np.int64), sessions)                      # [S]
    n_s = len(session_user)
    hour = rng.choice(24, size=n_s, p=hourly_profile(cfg))
    start = hour * 3600 + rng.integers(0, 3600, size=n_s)                            # [S] seconds in the day
    length = 1 + rng.poisson(cfg.requests_per_session - 1, size=n_s)                 # [S]
    user = np.repeat(session_user, length)                                           # [R]
    first = np.repeat(np.cumsum(length) - length, length)                            # [R] index of session start
    gaps = rng.exponential(cfg.session_gap_s, size=len(user))
    gaps[first == np.arange(len(user))] = 0.0
    cs = np.cumsum(gaps)
    offset = cs - cs[first]                                                          # [R] seconds into the session
    sec = np.minimum(np.repeat(start, length) + offset.astype(np.int64), SECONDS_PER_DAY - 1)
    order = np.lexsort((user, sec))
    if len(user) >= REQUESTS_PER_DAY_MAX:
        raise ValueError(f"day {day} has {len(user)} requests, more than request ids allow")
    request_id = day * REQUESTS_PER_DAY_MAX + np.arange(len(user), dtype=np.int64)
    return Traffic(day=day, request_id=request_id, user_id=user[order],
                   ts=(day * SECONDS_PER_DAY + sec[order]).astype(np.int64))
