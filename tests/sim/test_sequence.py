"""The world's sequential structure: transitions, memory of recent clicks, organic discovery."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.behavior import all_utilities, click_probability, log_organic_mass, reference_ctr
from sim.config import BehaviorConfig, ItemConfig, SequenceConfig, UserConfig, WorldConfig
from sim.organic import organic_choice, simulate_sequences
from sim.rng import keyed_uniform
from sim.state import initial_state, remember
from sim.transitions import Transitions, lag_weights
from sim.world import make_world


def world_config(weight: float = 1.0, outside: str = "fixed", **seq) -> WorldConfig:
    return WorldConfig(seed=5, latent_dim=4, collab_dim=2,
                       users=UserConfig(n=200, new_per_day=5), items=ItemConfig(n=120, new_per_day=6, n_categories=4),
                       behavior=BehaviorConfig(outside=outside),
                       sequence=SequenceConfig(weight=weight, floor=0.002, repeat=3.0, **seq))


def test_kernel_rows_sum_to_one_and_lookups_agree_with_dense_rows():
    k = Transitions.from_edges(np.array([0, 0, 0, 1, 2, 2]), np.array([1, 2, 1, 2, 2, 0]),
                               np.array([1.0, 2.0, 1.0, 1.0, 5.0, 1.0], np.float32), 3)
    np.testing.assert_allclose(k.lookup(np.array([0, 0, 1, 2, 2, -1]), np.array([1, 2, 2, 0, 2, 1])),
                               [0.5, 0.5, 1.0, 1.0, 0.0, 0.0])   # duplicates summed, self-loop dropped, -1 empty
    recent = np.array([[0, 2], [1, -1]])
    lag = lag_weights(2, 0.5)
    dense = k.dense_affinity(recent, lag)
    np.testing.assert_allclose(k.affinity(recent, np.tile(np.arange(3), (2, 1)), lag), dense)
    np.testing.assert_allclose(dense[0], [0.5, 0.5, 0.5])


def test_generated_kernel_is_the_same_whichever_day_the_world_is_built_on():
    a, b = make_world(world_config(), 2), make_world(world_config(), 2)
    assert a.item_next == b.item_next
    rows = np.diff(a.item_next.indptr)
    assert rows.min() >= 1                                   # every item leads somewhere
    later = make_world(world_config(), 3).item_next
    assert later.n_items == a.n_items + 6                     # new arrivals get links of their own


def test_memory_keeps_the_newest_clicks_first():
    recent = np.array([[7, 8, -1], [5, -1, -1], [-1, -1, -1]])
    out = remember(recent, np.array([0, 1, 0, 1, 1, 1]), np.array([1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(out, [[3, 1, 7], [6, 5, 4], [-1, -1, -1]])


def test_the_next_click_given_the_last_is_predictable_well_above_chance():
    w = make_world(world_config(), 0)
    st = initial_state(w)
    seqs = simulate_sequences(w, np.full(w.n_users, 6), seed=1, state=st)
    hits, chance = [], []
    for s in seqs:
        for a, b in zip(s[:-1], s[1:]):
            row = w.item_next.indices[w.item_next.indptr[a]:w.item_next.indptr[a + 1]]
            hits.append(b in set(row.tolist()))
            chance.append(len(row) / w.n_items)
    assert np.mean(hits) > 5 * np.mean(chance)
    # Without the sequential term the same users no longer follow the links.
    flat = make_world(world_config(weight=0.0), 0)
    seqs0 = simulate_sequences(flat, np.full(w.n_users, 6), seed=1, state=initial_state(flat))
    hits0 = [b in set(w.item_next.indices[w.item_next.indptr[a]:w.item_next.indptr[a + 1]].tolist())
             for s in seqs0 for a, b in zip(s[:-1], s[1:])]
    assert np.mean(hits) > 2 * np.mean(hits0)
    # Users who already took an item rarely take it again (repeat penalty).
    repeats = np.mean([len(s) - len(np.unique(s)) for s in seqs])
    free = make_world(dataclasses.replace(world_config(), sequence=dataclasses.replace(
        world_config().sequence, repeat=0.0)), 0)
    repeats0 = np.mean([len(s) - len(np.unique(s)) for s in
                        simulate_sequences(free, np.full(w.n_users, 6), seed=1, state=initial_state(free))])
    assert repeats < repeats0


def test_fast_sequences_draw_from_the_same_distribution_as_one_organic_choice():
    """The two-part mixture sampler is exact: each user's second event, placed on the CDF of the
    exact law given their first (utilities with that memory and that purchase), is uniform."""
    from scipy.stats import kstest

    from sim.state import KEY_STRIDE
    cfg = dataclasses.replace(world_config(), users=UserConfig(n=3000))
    w = make_world(cfg, 0)
    st = initial_state(w)
    seqs = simulate_sequences(w, np.full(w.n_users, 2), seed=3, state=st)
    first = np.array([s[0] for s in seqs])
    second = np.array([s[1] for s in seqs])
    users = np.arange(w.n_users)
    given = dataclasses.replace(st, user_recent=remember(st.user_recent, users, first),
                                bought_key=np.sort(users * KEY_STRIDE + first))
    u = all_utilities(w, given, users).astype(np.float64)                        # [U, I]
    q = np.exp(u - u.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    cdf = np.cumsum(q, axis=1)
    hi = cdf[users, second]
    lo = hi - q[users, second]
    pit = lo + np.random.default_rng(0).random(len(users)) * (hi - lo)         # randomised PIT
    assert kstest(pit, "uniform").pvalue > 0.001
    # And one organic choice from the same state follows the same law.
    again = organic_choice(w, given, users, keyed_uniform(9, 0, "t", users))
    hi2 = cdf[users, again]
    pit2 = hi2 - np.random.default_rng(1).random(len(users)) * q[users, again]
    assert kstest(pit2, "uniform").pvalue > 0.001


def test_a_catalogue_outside_option_makes_random_slates_rarely_clicked_and_keeps_the_oracle_on_top():
    w = make_world(world_config(outside="catalogue"), 0)
    st = initial_state(w)
    users = np.arange(40)
    np.testing.assert_allclose(st.user_outside, log_organic_mass(w, st), rtol=1e-6)
    u = all_utilities(w, st, users).astype(np.float64)
    np.testing.assert_allclose(st.user_outside[users], np.log(np.exp(u).sum(axis=1)), rtol=1e-5)
    ref = reference_ctr(w, st, users, 10, users, 0)
    assert np.all(ref.oracle >= ref.random)
    rng = np.random.default_rng(0)
    for _ in range(5):
        slates = rng.integers(0, w.n_items, (len(users), 10))
        served = click_probability(w, st, users, slates).sum(axis=1) / 10
        assert np.all(served <= ref.oracle + 1e-9)


def test_shard_order_never_changes_a_click_probability():
    w = make_world(world_config(outside="catalogue"), 0)
    st = initial_state(w)
    users = np.arange(60)
    slates = np.random.default_rng(1).integers(0, w.n_items, (60, 8))
    whole = click_probability(w, st, users, slates)
    parts = np.concatenate([click_probability(w, st, users[i::3], slates[i::3]) for i in range(3)])
    order = np.concatenate([np.arange(60)[i::3] for i in range(3)])
    np.testing.assert_array_equal(whole[order], parts)


def test_item_lifecycles_move_choices_with_the_clock_and_the_fast_sampler_stays_exact():
    """Late items gain utility as the clock runs: in a sequence drawn whole the clock is the user's
    progress (-1 first, 1 last), in a campaign the day; the second of two events follows the
    exact law at clock 1."""
    from scipy.stats import kstest

    from sim.behavior import clock, item_prior
    from sim.state import KEY_STRIDE
    cfg = dataclasses.replace(world_config(), users=UserConfig(n=3000))
    cfg = dataclasses.replace(cfg, behavior=dataclasses.replace(cfg.behavior, lifecycle=4.0, lifecycle_days=11))
    w = make_world(cfg, 0)
    late = np.where(np.arange(w.n_items) % 2, 0.5, -0.5).astype(np.float32)        # odd items are late
    w = dataclasses.replace(w, item_lateness=late)
    st = initial_state(w)
    assert clock(w, 0) == -1.0 and clock(w, 5) == 0.0 and clock(w, 10) == 1.0 and clock(w, 40) == 1.0
    now = dataclasses.replace(w, config=dataclasses.replace(cfg, behavior=dataclasses.replace(
        cfg.behavior, lifecycle_start=1.0)))
    assert clock(now, 0) == clock(now, 7) == 1.0                     # a campaign after its log's end
    np.testing.assert_allclose(item_prior(w, dataclasses.replace(st, day=10)) - item_prior(w, st), 2 * 4.0 * late,
                               rtol=1e-5, atol=1e-5)
    seqs = simulate_sequences(w, np.full(w.n_users, 2), seed=3, state=st)
    first = np.array([s[0] for s in seqs])
    second = np.array([s[1] for s in seqs])
    assert (first % 2).mean() < 0.35 and (second % 2).mean() > 0.65
    users = np.arange(w.n_users)
    given = dataclasses.replace(st, day=10, user_recent=remember(st.user_recent, users, first),
                                bought_key=np.sort(users * KEY_STRIDE + first))
    u = all_utilities(w, given, users).astype(np.float64)                        # [U, I] at clock 1
    q = np.exp(u - u.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    hi = np.cumsum(q, axis=1)[users, second]
    pit = hi - np.random.default_rng(0).random(len(users)) * q[users, second]
    assert kstest(pit, "uniform").pvalue > 0.001
