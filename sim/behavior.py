"""The choice model: what a user does with a slate; and the oracle that knows it.

A request is one multinomial choice: the user clicks one examined item, or nothing. Item k of the
slate has attractiveness e_k * exp(utility), e_k the examination of rank k (falling with rank), and
the no-click option has exp(no_click_utility). The utility of an item for a user mixes content
taste (which drifts) and collaborative taste, plus the item's quality, its popularity as users see
it, a novelty bonus that fades with the item's age, and a fatigue penalty for recent exposures of
the same item to the same user. Click probability stays inside sim/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sim.effects import favour
from sim.rng import keyed_uniform
from sim.state import WorldState
from sim.transitions import lag_weights
from sim.world import World

MAX_UTILITY = 30.0   # exp() stays finite in float32
ORACLE_CELLS = 4_000_000   # (request, item) utilities the oracle holds at a time: ~100 MB of passes


def examination(world: World, slate_size: int) -> np.ndarray:
    """Probability that a user looks at each rank: [K], falling with rank."""
    ranks = np.arange(slate_size)
    return (1.0 / (1.0 + ranks) ** world.config.behavior.position_decay).astype(np.float32)


def item_prior(world: World, state: WorldState, items: np.ndarray | slice = slice(None)) -> np.ndarray:
    """The user-independent part of the utility: quality, popularity, novelty: [I] or like `items`."""
    b = world.config.behavior
    created = world.item_created_day[items]
    age = (state.day - created).astype(np.float32)
    # The day-0 catalogue is the established assortment: only later arrivals are news.
    fresh = np.exp(-age / np.float32(b.novelty_days)) * (created > 0)
    prior = (world.item_quality[items]
             + np.float32(b.popularity_scale) * np.log1p(state.item_clicks[items])
             + np.float32(b.novelty) * fresh.astype(np.float32))
    if b.lifecycle:
        prior = prior + np.float32(b.lifecycle * clock(world, state.day)) * world.item_lateness[items]
    return prior


def clock(world: World, day: int) -> float:
    """The world's time on `day`: lifecycle_start on day 0, 1 from day lifecycle_days - 1 on."""
    b = world.config.behavior
    return b.lifecycle_start + (1.0 - b.lifecycle_start) * min(day / (b.lifecycle_days - 1.0), 1.0)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_d a[..., d] * b[..., d], added in the same order whatever the batch's shape.

    BLAS may split a product differently from one process or batch shape to another, and a
    re-run day must give the same bytes; an elementwise loop over the few latent axes does not.
    """
    out = a[..., 0] * b[..., 0]
    for k in range(1, a.shape[-1]):
        out += a[..., k] * b[..., k]
    return out


def sequence_bonus(world: World, affinity: np.ndarray) -> np.ndarray:
    """Utility from where the user's recent clicks lead: weight * log1p(affinity / floor)."""
    sc = world.config.sequence
    return np.float32(sc.weight) * np.log1p(affinity / np.float32(sc.floor))


def utility(world: World, state: WorldState, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Utility of each item for its request's user: users [B], items [B, K] -> [B, K] float32."""
    cfg = world.config
    b, sc, w = cfg.behavior, cfg.sequence, np.float32(cfg.behavior.content_weight)
    match = w * _dot(state.user_taste[users][:, None, :], world.item_latent[items])             # [B, K]
    if cfg.collab_dim:
        match += (1 - w) * _dot(world.user_collab[users][:, None, :], world.item_collab[items])
    u = np.float32(b.base_logit) + np.float32(b.relevance_scale) * match + item_prior(world, state, items)
    if sc.weight:
        lag = lag_weights(sc.memory, sc.lag_decay)
        u += sequence_bonus(world, world.item_next.affinity(state.user_recent[users], items, lag))  # [B, K]
    if sc.repeat:
        u -= np.float32(sc.repeat) * state.bought(users, items)
    if b.fatigue:
        u -= np.float32(b.fatigue) * state.exposures(users, items)                                  # [B, K]
    return np.minimum(u, MAX_UTILITY)


def click_probability(world: World, state: WorldState, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """The world's truth: P(click) per slot, users [B], slates [B, K] (-1: empty slot) -> [B, K]."""
    shown = slates >= 0
    items = np.where(shown, slates, 0)
    v = np.exp(utility(world, state, users, items)) * examination(world, slates.shape[1]) * shown  # [B, K]
    return v / (no_click(world, state, users)[:, None] + v.sum(axis=1, keepdims=True))


def no_click(world: World, state: WorldState, users: np.ndarray) -> np.ndarray:
    """The weight of the no-click option for each request's user: [B] float32."""
    b = world.config.behavior
    return np.exp(np.float32(b.no_click_utility) + state.user_outside[users]).astype(np.float32)


def log_organic_mass(world: World, state: WorldState, chunk: int = 512) -> np.ndarray:
    """log sum_j exp(utility(u, j)) over the catalogue for every user: [U] float32, the no-click
    weight of a "catalogue" outside option. Summed in a fixed order, so shards and re-runs agree."""
    out = np.zeros(len(state.user_taste), np.float32)
    for lo in range(0, len(out), chunk):
        u = all_utilities(world, state, np.arange(lo, min(lo + chunk, len(out)))).astype(np.float64)
        top = u.max(axis=1)
        out[lo:lo + chunk] = top + np.log(np.exp(u - top[:, None]).sum(axis=1))
    return out


def choose(prob: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One draw per request from its slot probabilities, the rest being no click: [B, K] bool."""
    idx = (np.cumsum(prob, axis=1) <= uniform[:, None]).sum(axis=1)            # [B], K means no click
    return np.arange(prob.shape[1])[None, :] == idx[:, None]


class Response(NamedTuple):
    prob: np.ndarray     # [B, K] click probability of each slot, the known effect included
    clicked: np.ndarray  # [B, K] bool, at most one per request


def respond(world: World, state: WorldState, users: np.ndarray, slates: np.ndarray, uniform: np.ndarray,
            favoured: np.ndarray | None = None) -> Response:
    """The world's one answer to a batch of slates, given one uniform draw per request; the
    scenario's known effect (sim/effects.py) lifts the requests marked `favoured` [B]."""
    prob = click_probability(world, state, users, slates)                                       # [B, K]
    if favoured is not None:
        prob = favour(prob, favoured, world.config.effect.logit)
    return Response(prob, choose(prob, uniform))


def all_utilities(world: World, state: WorldState, users: np.ndarray, exact: bool = True) -> np.ndarray:
    """Utility of every item for each user: [b] -> [b, I] float32 (the oracle's and organic choice's).

    `exact=False` takes the taste products from BLAS: ten times faster, the same on one machine
    and thread count, but not bit for bit across processes (the offline benches use it)."""
    cfg = world.config
    b, sc, w = cfg.behavior, cfg.sequence, np.float32(cfg.behavior.content_weight)
    if exact:
        match = w * _dot(state.user_taste[users][:, None, :], world.item_latent[None, :, :])     # [b, I]
        if cfg.collab_dim:
            match += (1 - w) * _dot(world.user_collab[users][:, None, :], world.item_collab[None, :, :])
    else:
        match = w * (state.user_taste[users] @ world.item_latent.T)
        if cfg.collab_dim:
            match += (1 - w) * (world.user_collab[users] @ world.item_collab.T)
    u = np.float32(b.base_logit) + np.float32(b.relevance_scale) * match + item_prior(world, state)[None, :]
    if sc.weight:
        lag = lag_weights(sc.memory, sc.lag_decay)
        u += sequence_bonus(world, world.item_next.dense_affinity(state.user_recent[users], lag))
    for row, user in enumerate(users.tolist()):
        if sc.repeat:
            u[row, state.user_bought(user)] -= np.float32(sc.repeat)
        if b.fatigue:
            items, counts = state.user_exposures(user)
            u[row, items] -= np.float32(b.fatigue) * counts
    return np.minimum(u, MAX_UTILITY)


def request_uniform(seed: int, day: int, request_ids: np.ndarray) -> np.ndarray:
    """The draw that decides a request's click: fixed by its id, whatever shard serves it."""
    return keyed_uniform(seed, day, "clicks", request_ids)


@dataclass(frozen=True)
class Reference:
    """Expected CTR per request of the oracle's best slate and of a uniformly random slate."""

    oracle: np.ndarray  # [B]
    random: np.ndarray  # [B]


def reference_ctr(world: World, state: WorldState, users: np.ndarray, slate_size: int,
                  request_ids: np.ndarray, day: int, draws: int | None = None, chunk: int | None = None,
                  shown: np.ndarray | None = None, favoured: np.ndarray | None = None) -> Reference:
    """Oracle and random expected CTR (clicks per shown item) for each request, on slates of the
    length the request was served (`shown` [B], default `slate_size`) and, for the requests marked
    `favoured` [B], under the scenario's known effect, as the served slates were answered.

    The probability of a click on a slate is S / (v0 + S) with S = sum_k e_k v_k, increasing in S.
    With examination falling in rank, S is largest for the n most attractive items in order of
    attractiveness (rearrangement inequality), so for each length n the oracle is exact for the
    day's choice model, and no served slate of n items beats it. Under the effect (each slot's odds
    times e^logit, sim/effects.py) the oracle is that slate's favoured probability, the best slate
    of the near-proportional lift it makes at these rates (exact as the rates go to 0).
    The random reference averages `draws` uniformly random slates of the same length per request,
    drawn from a generator keyed by the request id (so shards agree); over catalogues above 4096
    items a slate is drawn with replacement, which changes it only in the rare slates with a repeat.
    """
    cfg = world.config
    draws = draws or cfg.oracle.random_draws
    logit = cfg.effect.logit
    exam = examination(world, slate_size).astype(np.float64)                                      # [K]
    n_items = world.n_items
    k = min(slate_size, n_items)
    shown = np.full(len(users), k) if shown is None else np.minimum(np.asarray(shown), k)          # [B]
    favoured = np.zeros(len(users), bool) if favoured is None else np.asarray(favoured, bool)      # [B]
    oracle, random = np.zeros(len(users)), np.zeros(len(users))
    # Requests per pass: a pass holds a few [chunk, I] float64 arrays, so its memory is bounded by
    # ORACLE_CELLS whatever the catalogue (each request's figures depend on its row alone).
    chunk = chunk or max(1, min(256, ORACLE_CELLS // max(n_items, 1)))
    for start in range(0, len(users), chunk):
        u, n = users[start:start + chunk], shown[start:start + chunk]
        fav = favoured[start:start + chunk]
        v0 = no_click(world, state, u).astype(np.float64)                                         # [b]
        v = np.exp(all_utilities(world, state, u).astype(np.float64))                           # [b, I]
        top = -np.sort(-np.partition(v, n_items - k, axis=1)[:, -k:], axis=1)                     # [b, k]
        ev = top * exam[:k] * (np.arange(k)[None, :] < n[:, None])                                # [b, k]
        p = ev / (v0 + ev.sum(axis=1))[:, None]                                                   # [b, k]
        p = favour(p, fav, logit)
        oracle[start:start + chunk] = np.where(n > 0, p.sum(axis=1) / np.maximum(n, 1), 0.0)
        for row, rid in enumerate(request_ids[start:start + chunk].tolist()):
            m = int(n[row])
            if m == 0:
                continue
            rng = np.random.default_rng([cfg.seed, day, 0x0AC1E, rid])
            if n_items <= 4096:
                # A uniformly random set of k in a uniformly random order: its first m are a random slate of m.
                values = rng.random((draws, n_items))
                part = np.argpartition(values, k - 1, axis=1)[:, :k]                                # [draws, k]
                slates = np.take_along_axis(part, np.take_along_axis(values, part, 1).argsort(axis=1), 1)
            else:
                slates = rng.integers(0, n_items, size=(draws, k))
            er = v[row, slates[:, :m]] * exam[:m]                                                  # [draws, m]
            pr = favour(er / (v0[row] + er.sum(axis=1))[:, None], np.full(draws, bool(fav[row])), logit)
            random[start + row] = pr.sum(axis=1).mean() / m
    return Reference(oracle=oracle, random=random)


def oracle_sample(seed: int, day: int, request_ids: np.ndarray, n_requests: int, sample: int) -> np.ndarray:
    """Which requests get the oracle: a keyed coin per request, so every shard picks the same ones."""
    if sample == 0 or sample >= n_requests:
        return np.ones(len(request_ids), bool)
    return keyed_uniform(seed, day, "oracle", request_ids) < sample / n_requests
