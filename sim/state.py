"""What changes from day to day: tastes drift, items wear out on users, popularity, churn.

State goes in and comes out (RecSim NG style): `advance(world, state, log)` returns the state of
the next day and changes nothing. Within a day the state is fixed, so the choice model of a day is
a plain function of (user, item, position) and the oracle stays exact. Each day's state is saved,
so a day can be re-run from the state it started with.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sim.rng import keyed_uniform, stream
from sim.world import World

# A (user, item) pair packs into one int64 key; item ids stay below 2**31.
KEY_STRIDE = np.int64(2**31)
FORGET_BELOW = 0.05   # exposure counts decayed below this are dropped, keeping the table small


@dataclass(frozen=True)
class WorldState:
    """The world at the start of `day`."""

    day: int
    user_taste: np.ndarray    # [U, d] float32 unit norm: taste after drift
    user_active: np.ndarray   # [U] bool: False while churned
    item_clicks: np.ndarray   # [I] float32 decayed click counts: popularity as users see it
    seen_key: np.ndarray      # [E] int64 sorted (user * KEY_STRIDE + item) pairs shown recently
    seen_count: np.ndarray    # [E] float32 decayed exposure counts of those pairs
    user_recent: np.ndarray   # [U, L] int64 each user's most recent clicks, newest first, -1 empty
    bought_key: np.ndarray    # [P] int64 sorted (user * KEY_STRIDE + item) pairs ever clicked
    user_outside: np.ndarray  # [U] float32 log of the no-click option's weight for the day (0: exp(0))

    def exposures(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Decayed count of past exposures of each item to its user: users [B], items [B, K] -> [B, K]."""
        if len(self.seen_key) == 0:
            return np.zeros(items.shape, np.float32)
        keys = users[:, None].astype(np.int64) * KEY_STRIDE + items                  # [B, K]
        pos = np.minimum(np.searchsorted(self.seen_key, keys), len(self.seen_key) - 1)  # [B, K]
        return np.where(self.seen_key[pos] == keys, self.seen_count[pos], np.float32(0))

    def bought(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each item was clicked by its user before: users [B], items [B, K] -> [B, K] bool."""
        if len(self.bought_key) == 0:
            return np.zeros(items.shape, bool)
        keys = users[:, None].astype(np.int64) * KEY_STRIDE + items
        pos = np.minimum(np.searchsorted(self.bought_key, keys), len(self.bought_key) - 1)
        return self.bought_key[pos] == keys

    def user_bought(self, user: int) -> np.ndarray:
        """Items `user` has clicked before."""
        lo, hi = np.searchsorted(self.bought_key, [user * KEY_STRIDE, (user + 1) * KEY_STRIDE])
        return self.bought_key[lo:hi] - user * KEY_STRIDE

    def user_exposures(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """Items shown to `user` recently and their decayed counts."""
        lo, hi = np.searchsorted(self.seen_key, [user * KEY_STRIDE, (user + 1) * KEY_STRIDE])
        return self.seen_key[lo:hi] - user * KEY_STRIDE, self.seen_count[lo:hi]


def initial_state(world: World) -> WorldState:
    """Day 0: tastes as drawn, everyone active, nothing shown yet (users may arrive with a past)."""
    return with_outside(world, with_past(world, np.arange(world.n_users), WorldState(day=0, user_taste=world.user_taste.copy(),
                      user_active=np.ones(world.n_users, bool),
                      item_clicks=np.zeros(world.n_items, np.float32),
                      seen_key=np.zeros(0, np.int64), seen_count=np.zeros(0, np.float32),
                      user_recent=np.full((world.n_users, world.config.sequence.memory), -1, np.int64),
                      bought_key=np.zeros(0, np.int64), user_outside=np.zeros(world.n_users, np.float32))))


def with_past(world: World, users: np.ndarray, state: WorldState) -> WorldState:
    """Arriving `users` remember the `prior_events` organic choices they made elsewhere, drawn one
    after another by the world (sim/organic.py); the recommender never sees them."""
    n = world.config.sequence.prior_events
    if n == 0 or len(users) == 0:
        return state
    from sim.organic import organic_choice   # organic choices build on this module's state
    for t in range(n):
        items = organic_choice(world, state, users, keyed_uniform(world.config.seed, state.day, f"past-{t}", users))
        state = replace(state, user_recent=remember(state.user_recent, users, items),
                        bought_key=np.union1d(state.bought_key, users.astype(np.int64) * KEY_STRIDE + items))
    return state


def with_outside(world: World, state: WorldState) -> WorldState:
    """The state with the day's no-click weights: 0 for a fixed outside option, else each user's
    log organic mass over the catalogue as the day starts (sim/behavior.log_organic_mass)."""
    if world.config.behavior.outside == "fixed":
        return state
    from sim.behavior import log_organic_mass   # behavior builds on this module's state
    return replace(state, user_outside=log_organic_mass(world, state))


@dataclass(frozen=True)
class DayLog:
    """What the world needs of a day to move on: every impression and whether it was clicked,
    in time order (a user's recent clicks are the last ones of the log)."""

    user_id: np.ndarray   # [N] int64
    item_id: np.ndarray   # [N] int64
    clicked: np.ndarray   # [N] bool


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _exposure(state: WorldState, log: DayLog, decay: float) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([state.seen_key, log.user_id * KEY_STRIDE + log.item_id])
    counts = np.concatenate([state.seen_count * np.float32(decay), np.ones(len(log.user_id), np.float32)])
    uniq, inv = np.unique(keys, return_inverse=True)
    summed = np.bincount(inv, weights=counts, minlength=len(uniq)).astype(np.float32)
    keep = summed >= FORGET_BELOW
    return uniq[keep], summed[keep]


def remember(recent: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each user's most recent clicks after `items` (in time order) were clicked: [U, L] -> [U, L]."""
    if len(users) == 0:
        return recent
    memory = recent.shape[1]
    order = np.lexsort((-np.arange(len(users)), users))                             # per user, newest first
    u, it = users[order], items[order]
    first = np.searchsorted(u, u)                                                    # [n] start of the user's run
    rank = np.arange(len(u)) - first                                                 # 0 = newest click
    count = np.bincount(u, minlength=len(recent))                                    # [U]
    out = recent.copy()
    touched = np.flatnonzero(count)
    # Shift the old memory right by the number of new clicks (at most L), then write the new ones.
    shift = np.minimum(count[touched], memory)
    cols = np.arange(memory)[None, :] - shift[:, None]                               # [T, L] source column
    old = np.take_along_axis(recent[touched], np.maximum(cols, 0), axis=1)
    out[touched] = np.where(cols >= 0, old, -1)
    keep = rank < memory
    out[u[keep], rank[keep]] = it[keep]
    return out


def _bought(state: WorldState, log: DayLog) -> np.ndarray:
    keys = log.user_id[log.clicked] * KEY_STRIDE + log.item_id[log.clicked]
    return np.union1d(state.bought_key, keys) if len(keys) else state.bought_key


def advance(world: World, state: WorldState, log: DayLog) -> WorldState:
    """The state at the start of day + 1, from the day's log; `world` must hold day + 1's arrivals."""
    cfg, day = world.config, state.day
    b, uc = cfg.behavior, cfg.users
    if world.through_day < day + 1:
        raise ValueError(f"advancing day {day} needs the world through day {day + 1}, got {world.through_day}")
    n_users, n_items = len(state.user_taste), len(state.item_clicks)

    if b.fatigue > 0:
        seen_key, seen_count = _exposure(state, log, b.fatigue_decay)
    else:
        seen_key, seen_count = state.seen_key, state.seen_count
    item_clicks = (state.item_clicks * np.float32(b.popularity_decay)
                   + np.bincount(log.item_id[log.clicked], minlength=n_items).astype(np.float32))

    taste = state.user_taste
    if b.drift > 0:
        d = taste.shape[1]
        step = stream(cfg.seed, day, "drift").standard_normal(taste.shape, dtype=np.float32)  # [U, d]
        taste = _unit(taste + np.float32(b.drift / np.sqrt(d)) * step).astype(np.float32)

    clicked_today = np.zeros(n_users, bool)
    clicked_today[log.user_id[log.clicked]] = True
    u = keyed_uniform(cfg.seed, day, "churn", np.arange(n_users))                           # [U]
    p_churn = uc.churn_rate * (1.0 - uc.churn_click_relief * clicked_today)
    active = np.where(state.user_active, u >= p_churn, u < uc.return_rate)

    new_users = slice(n_users, world.n_users)
    recent = remember(state.user_recent, log.user_id[log.clicked], log.item_id[log.clicked])
    return with_outside(world, with_past(world, np.arange(n_users, world.n_users), WorldState(
        day=day + 1,
        user_taste=np.concatenate([taste, world.user_taste[new_users]]),
        user_active=np.concatenate([active, np.ones(world.n_users - n_users, bool)]),
        item_clicks=np.concatenate([item_clicks, np.zeros(world.n_items - n_items, np.float32)]),
        seen_key=seen_key, seen_count=seen_count,
        user_recent=np.concatenate([recent, np.full((world.n_users - n_users, recent.shape[1]), -1, np.int64)]),
        bought_key=_bought(state, log), user_outside=np.zeros(world.n_users, np.float32),
    )))


FIELDS = ("user_taste", "user_active", "item_clicks", "seen_key", "seen_count", "user_recent", "bought_key",
          "user_outside")


def state_path(root: Path, day: int) -> Path:
    return Path(root) / f"state-day={day:05d}.npz"


def save_state(state: WorldState, root: Path) -> Path:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    path = state_path(root, state.day)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, day=np.int64(state.day), **{k: getattr(state, k) for k in FIELDS})
    os.replace(tmp, path)
    return path


def load_state(root: Path, day: int) -> WorldState:
    path = state_path(root, day)
    if not path.is_file():
        raise FileNotFoundError(f"no world state for day {day} at {path}; run the days before it first")
    with np.load(path) as z:
        return WorldState(day=int(z["day"]), **{k: z[k] for k in FIELDS})
