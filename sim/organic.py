"""Organic discovery: users who find items on their own (search, browsing), not from a slate.

Real logs mix recommended and organic events; a review log like Amazon's is organic only. An
organic event is one choice over the whole catalogue with the same utility the slates are judged
by, without position bias and without the no-click option (the user went looking and took
something): P(j) is proportional to exp(utility(j)).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.behavior import all_utilities, sequence_bonus
from sim.rng import keyed_uniform
from sim.state import KEY_STRIDE, WorldState, remember
from sim.transitions import lag_weights
from sim.world import World

MAX_REJECTIONS = 64   # redraws of an item the user already took before the draw stands


def organic_choice(world: World, state: WorldState, users: np.ndarray, uniform: np.ndarray,
                   exact: bool = True, chunk: int = 1024) -> np.ndarray:
    """The item each user takes, one uniform draw per user: users [B], uniform [B] -> items [B]."""
    out = np.empty(len(users), np.int64)
    for lo in range(0, len(users), chunk):
        u = all_utilities(world, state, users[lo:lo + chunk], exact=exact)                  # [b, I] float32
        out[lo:lo + chunk] = _draw(_cdf(u), uniform[lo:lo + chunk])
    return out


def visit_takes(world: World, state: WorldState, users: np.ndarray, request_ids: np.ndarray, day: int) -> np.ndarray:
    """The item each request's user also took on their own during that visit, -1 for none: [B] -> [B].

    A keyed coin per request decides whether the visit has an organic take (BehaviorConfig.organic)
    and a keyed draw picks it, in exact arithmetic: no shard or batch changes an organic event."""
    out = np.full(len(users), -1, np.int64)
    rate = world.config.behavior.organic
    if rate <= 0 or len(users) == 0:
        return out
    seed = world.config.seed
    yes = np.flatnonzero(keyed_uniform(seed, day, "organic-visit", request_ids) < rate)
    if len(yes):
        out[yes] = organic_choice(world, state, users[yes], keyed_uniform(seed, day, "organic-take", request_ids[yes]))
    return out


def _cdf(u: np.ndarray) -> np.ndarray:
    """Row-normalised CDFs of exp(u): [b, I] -> [b, I] float64, row r shifted to [r, r + 1]."""
    u = u - u.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(u), axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    cdf += np.arange(len(cdf))[:, None]
    return cdf


def _draw(cdf: np.ndarray, uniform: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse-CDF draws from rows of a shifted CDF (all rows, or `rows`): one search for all."""
    rows = np.arange(len(cdf)) if rows is None else rows
    n = cdf.shape[1]
    idx = np.searchsorted(cdf.reshape(-1), rows + uniform, side="left") - rows * n
    return np.clip(idx, 0, n - 1)


def _transition_part(world: World, static: np.ndarray, owners: np.ndarray, recent: np.ndarray):
    """The sparse extra mass of the items recent clicks lead to: exp(s_j) * (exp(bonus_j) - 1).

    Returns (owner row [m], item [m], mass [m]) sorted by owner, and each owner's total [a]."""
    sc, k = world.config.sequence, world.item_next
    lag = lag_weights(sc.memory, sc.lag_decay)
    own, item, aff = [], [], []
    for l in range(recent.shape[1]):
        rows = recent[:, l]
        ok = np.flatnonzero(rows >= 0)
        lo, hi = k.indptr[rows[ok]], k.indptr[rows[ok] + 1]
        deg = hi - lo
        flat = np.repeat(lo - np.cumsum(deg) + deg, deg) + np.arange(deg.sum())     # CSR positions
        own.append(np.repeat(ok, deg))
        item.append(k.indices[flat])
        aff.append(lag[l] * k.weights[flat])
    own, item, aff = np.concatenate(own), np.concatenate(item), np.concatenate(aff)
    keys, inv = np.unique(own * world.n_items + item, return_inverse=True)
    aff = np.bincount(inv, weights=aff, minlength=len(keys)).astype(np.float32)
    own, item = keys // world.n_items, keys % world.n_items
    mass = np.exp(static[owners[own], item].astype(np.float64)) * np.expm1(sequence_bonus(world, aff).astype(np.float64))
    return own, item, mass, np.bincount(own, weights=mass, minlength=len(owners))


def simulate_sequences(world: World, lengths: np.ndarray, seed: int, state: WorldState,
                       block: int = 2048, phases: int = 5) -> list[np.ndarray]:
    """Each user's `lengths[u]` organic events in order, every choice seeing the ones before it.

    Exactly organic_choice's distribution, drawn faster: a user's utility is a static part (taste,
    quality; the world does not move on within these sequences) plus where their recent clicks
    lead, a sparse term, minus the repeat penalty. So exp(utility) is the static softmax plus a
    sparse extra mass on the transition targets, sampled as a two-part mixture from one static CDF
    per user; items already taken are redrawn with probability 1 - exp(-repeat) (rejection, exact).
    With item lifecycles (BehaviorConfig.lifecycle) the clock is the user's progress through their
    own sequence, -1 at the first event and 1 at the last, in `phases` steps: one CDF per phase.
    """
    sc, life = world.config.sequence, world.config.behavior.lifecycle
    phases = phases if life else 1
    clocks = np.linspace(-1.0, 1.0, phases) if phases > 1 else np.zeros(1)
    block = max(block // phases, 1)
    out = np.full((len(lengths), int(lengths.max(initial=0))), -1, np.int64)
    bare = replace(state, user_recent=np.full_like(state.user_recent, -1), bought_key=np.zeros(0, np.int64))
    keep_bought = np.exp(-sc.repeat)
    for lo in range(0, len(lengths), block):
        users = np.arange(lo, min(lo + block, len(lengths)))
        if not lengths[users].any():
            continue
        base = all_utilities(replace(world, config=_static(world)), bare, users, exact=False)     # [b, I]
        statics, zs, cdfs = [], [], []
        for c in clocks:
            static = base + np.float32(life * c) * world.item_lateness[None, :] if life else base
            static = static - static.max(axis=1, keepdims=True)
            statics.append(static)
            zs.append(np.exp(static.astype(np.float64)).sum(axis=1))                             # [b]
            cdfs.append(_cdf(static))
        recent = np.full((len(users), sc.memory), -1, np.int64)
        span = np.maximum(lengths[users] - 1, 1).astype(float)
        for t in range(int(lengths[users].max(initial=0))):
            rows = np.flatnonzero(lengths[users] > t)                                             # [a]
            phase = np.rint(t / span[rows] * (phases - 1)).astype(np.int64)                      # [a]
            pick = np.full(len(rows), -1, np.int64)
            todo = np.arange(len(rows))
            for attempt in range(MAX_REJECTIONS + 1):
                draw = keyed_uniform(seed, t * 1000 + attempt, "organic", users[rows[todo]] * 2)
                coin = keyed_uniform(seed, t * 1000 + attempt, "organic", users[rows[todo]] * 2 + 1)
                choice = np.empty(len(todo), np.int64)
                for p in np.unique(phase[todo]):
                    at = np.flatnonzero(phase[todo] == p)
                    choice[at] = _choose(world, statics[p], zs[p], cdfs[p], rows[todo[at]], recent, draw[at], coin[at])
                taken = (out[users[rows[todo]], :t] == choice[:, None]).any(axis=1)
                accept = ~taken | (keyed_uniform(seed, t * 1000 + attempt, "organic-repeat",
                                                 users[rows[todo]]) < keep_bought)
                if attempt == MAX_REJECTIONS:
                    accept[:] = True
                pick[todo[accept]] = choice[accept]
                todo = todo[~accept]
                if len(todo) == 0:
                    break
            out[users[rows], t] = pick
            recent[rows] = remember(recent[rows], np.arange(len(rows)), pick)
    return [out[u, :lengths[u]] for u in range(len(lengths))]


def _choose(world: World, static: np.ndarray, z: np.ndarray, cdf: np.ndarray, rows: np.ndarray,
            recent: np.ndarray, draw: np.ndarray, coin: np.ndarray) -> np.ndarray:
    """One draw per row of the block from the static CDF mixed with the sparse transition mass."""
    choice = _draw(cdf, draw, rows)
    if world.config.sequence.weight:
        own, item, mass, extra = _transition_part(world, static, rows, recent[rows])
        sparse = coin * (z[rows] + extra) < extra                                               # [n] the sparse part
        if sparse.any():
            c = np.cumsum(mass)
            start = np.concatenate([[0.0], c])[np.searchsorted(own, np.arange(len(rows)))]
            where = np.searchsorted(c, start[sparse] + draw[sparse] * extra[sparse], side="left")
            choice[sparse] = item[np.minimum(where, len(item) - 1)]
    return choice


def _static(world: World):
    """The world's config with the terms that move within a sequence turned off."""
    cfg = world.config
    return replace(cfg, sequence=replace(cfg.sequence, weight=0.0, repeat=0.0),
                   behavior=replace(cfg.behavior, lifecycle=0.0))
