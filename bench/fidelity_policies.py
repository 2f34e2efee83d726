"""The exposures a simulated log can come from: organic discovery, uniform slates, the loop's policy.

A real log is the product of its users and of what they were shown. Amazon's reviews are organic
(search, browsing), so the comparison with such a file uses `organic`; `uniform` (random slates)
and `loop` (slates from a popularity + item-CF recommender retrained daily on its own clicks, the
default experiment's treatment recall) show how the same users look through other exposures. Each
returns every user's clicks in time order (0-based item ids), the world's own choices.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from components.recall import ItemCFConfig, ItemCFRecaller, PopularConfig, PopularRecaller
from components.types import Catalog, ItemFeatures, TrainData, UserBatch
from sim import fit
from sim.behavior import request_uniform, respond
from sim.config import WorldConfig
from sim.rng import stream
from sim.state import DayLog, advance, initial_state
from sim.traffic import traffic
from sim.world import World, make_world

POLICIES = ("organic", "uniform", "loop")
SLATE = 10
HISTORY = 20


def organic(arrays: dict[str, np.ndarray], knobs: fit.Knobs, lengths: np.ndarray, workdir: Path,
            seed: int) -> list[np.ndarray]:
    """Each user takes as many items as their real counterpart did, one organic choice at a time."""
    return fit.simulate_organic(arrays, knobs, lengths, workdir / "organic-world.npz", seed=seed)


def _clicks_by_user(n_users: int, users: list[np.ndarray], items: list[np.ndarray]) -> list[np.ndarray]:
    u, it = np.concatenate(users), np.concatenate(items)
    order = np.argsort(u, kind="stable")                          # stable: time order within a user
    cuts = np.searchsorted(u[order], np.arange(1, n_users))
    return np.split(it[order], cuts)


def _recent(clicks: list[list[int]], users: np.ndarray) -> np.ndarray:
    out = np.full((len(users), HISTORY), -1, np.int64)
    for r, u in enumerate(users.tolist()):
        seq = clicks[u][-HISTORY:][::-1]
        out[r, :len(seq)] = seq
    return out


class LoopPolicy:
    """Popularity + windowed item-CF, refitted each day on every click the loop has logged."""

    def __init__(self, n_items: int):
        self.catalog = Catalog(np.arange(n_items), np.zeros(n_items, np.int32), np.zeros((n_items, 1), np.float32))
        self.pop = self.cf = None

    def fit(self, day: int, users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> None:
        data = TrainData(day=day, catalog=self.catalog, click_user=users, click_item=items,
                         click_day=np.full(len(items), day, np.int32), click_ts=ts)
        self.pop = PopularRecaller(PopularConfig(window_days=10_000, decay=1.0)).fit(data)
        self.cf = ItemCFRecaller(ItemCFConfig(window_days=10_000, neighbours=100, history=3, pair_window=3,
                                              distance_decay=1.0, normalise=False)).fit(data)

    def slates(self, users: np.ndarray, recent: np.ndarray) -> np.ndarray:
        n = self.catalog.n_items
        zeros = np.zeros(len(users), np.int64)
        batch = UserBatch(users, zeros, zeros, recent, ItemFeatures(self.catalog, np.zeros(n, np.int64),
                                                                    np.zeros(n, np.int64)))
        cf, pop = self.cf.recall(batch, SLATE).items, self.pop.recall(batch, 3 * SLATE).items
        out = np.full((len(users), SLATE), -1, np.int64)
        for r in range(len(users)):
            seen = set(recent[r][recent[r] >= 0].tolist())
            row = [i for i in cf[r].tolist() if i >= 0 and i not in seen][:SLATE - 3]
            row += [i for i in pop[r].tolist() if i >= 0 and i not in seen and i not in row][:SLATE - len(row)]
            out[r, :len(row)] = row
        return out


def slates_world(cfg: WorldConfig, policy: str, days: int, seed: int) -> list[np.ndarray]:
    """`days` days of the fitted world's traffic, every request shown a slate by `policy`."""
    world: World = make_world(cfg, days)
    state = initial_state(make_world(cfg, 0))
    users_log, items_log = [], []
    clicks: list[list[int]] = [[] for _ in range(world.n_users)]
    loop = LoopPolicy(world.n_items) if policy == "loop" else None
    for day in range(days):
        tr = traffic(world, state, day, stream(seed, day, "fidelity-traffic"))
        if loop is None or not users_log:
            # Drawn with replacement: a repeat within 10 of thousands of items is rare and harmless.
            slates = stream(seed, day, "fidelity-slates").integers(0, world.n_items, (len(tr.user_id), SLATE))
        else:
            u, it = np.concatenate(users_log), np.concatenate(items_log)
            loop.fit(day - 1, u, it, np.arange(len(u)))
            slates = loop.slates(tr.user_id, _recent(clicks, tr.user_id))
        clicked = respond(world, state, tr.user_id, slates, request_uniform(seed, day, tr.request_id)).clicked
        r, k = np.nonzero(clicked)
        users_log.append(tr.user_id[r])
        items_log.append(slates[r, k])
        for u, i in zip(tr.user_id[r].tolist(), slates[r, k].tolist()):
            clicks[u].append(i)
        shown = slates >= 0
        rr, kk = np.nonzero(shown)
        state = advance(world, state, DayLog(tr.user_id[rr], slates[rr, kk], clicked[rr, kk]))
    return _clicks_by_user(world.n_users, users_log, items_log)


def simulate(policy: str, arrays: dict[str, np.ndarray], knobs: fit.Knobs, lengths: np.ndarray, workdir: Path,
             days: int, seed: int) -> list[np.ndarray]:
    if policy == "organic":
        return organic(arrays, knobs, lengths, workdir, seed)
    path = workdir / "slates-world.npz"
    np.savez(path, **arrays)
    cfg = fit.fitted_scenario(arrays, knobs, str(path.resolve()))
    # The log's time is spread over the days simulated: its clock runs once across them.
    cfg = replace(cfg, seed=seed, behavior=replace(cfg.behavior, lifecycle_days=max(days, 2), lifecycle_start=-1.0))
    return slates_world(cfg, policy, days, seed)


def write_log(path: Path, seqs: list[np.ndarray]) -> Path:
    """The log in the input's format: `user item item ...`, ids from 1, items made dense."""
    uniq = np.unique(np.concatenate(seqs)) if seqs else np.zeros(0, np.int64)
    lines = [" ".join([str(u + 1), *(str(int(i) + 1) for i in np.searchsorted(uniq, s))]) for u, s in enumerate(seqs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
