"""sim/behavior.py: the choice model and the oracle."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from sim.behavior import click_probability, examination, reference_ctr, relevance, respond
from sim.config import BehaviorConfig, ItemConfig, UserConfig, WorldConfig
from sim.world import make_world


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(seed=5, latent_dim=4, users=UserConfig(n=20),
                                  items=ItemConfig(n=30, n_categories=3),
                                  behavior=BehaviorConfig(base_logit=-1.0)))


@pytest.fixture(scope="module")
def micro_world():
    """Seven items: small enough to enumerate every slate."""
    return make_world(WorldConfig(seed=9, latent_dim=3, users=UserConfig(n=6),
                                  items=ItemConfig(n=7, n_categories=2)))


def expected_ctr(world, users, slates):
    """Expected clicks per shown item of each slate: [B]."""
    return click_probability(world, users, slates).mean(axis=1)


def test_examination_falls_with_rank(world):
    e = examination(world, 6)
    assert e[0] == 1.0
    assert (np.diff(e) < 0).all()


def test_click_probability_falls_with_position_for_the_same_item(world):
    users = np.arange(world.n_users)
    slates = np.tile(np.arange(world.n_users)[:, None] % world.n_items, (1, 6))    # same item in every slot
    p = click_probability(world, users, slates)
    assert p.shape == (world.n_users, 6)
    assert ((p > 0) & (p < 1)).all()
    assert (np.diff(p, axis=1) < 0).all()
    # position 0 is the item's relevance: examined for sure
    np.testing.assert_allclose(p[:, 0], relevance(world, users, slates)[:, 0])


def test_click_probability_of_an_item_does_not_depend_on_its_neighbours(world):
    users = np.array([3, 3])
    slates = np.array([[5, 1, 2], [5, 9, 7]])
    p = click_probability(world, users, slates)
    assert p[0, 0] == pytest.approx(p[1, 0])


def test_respond_click_rate_matches_click_probability(world):
    rng = np.random.default_rng(123)
    reps = 400
    users = np.tile(np.arange(world.n_users), reps)                                    # [20 * 400]
    slates = np.stack([rng.choice(world.n_items, 5, replace=False) for _ in users])     # [8000, 5]
    p = click_probability(world, users, slates)
    clicks = respond(world, users, slates, np.random.default_rng(7))
    assert clicks.dtype == bool and clicks.shape == slates.shape
    sd = np.sqrt((p * (1 - p)).sum())
    assert abs(clicks.sum() - p.sum()) < 4 * sd
    # position by position too: the position bias shows in the clicks
    sd_pos = np.sqrt((p * (1 - p)).sum(axis=0))
    assert (np.abs(clicks.sum(axis=0) - p.sum(axis=0)) < 4 * sd_pos).all()
    assert clicks[:, 0].mean() > clicks[:, 4].mean()


def test_respond_is_reproducible_from_the_generator(world):
    users = np.arange(world.n_users)
    slates = np.tile(np.arange(4), (world.n_users, 1))
    a = respond(world, users, slates, np.random.default_rng(1))
    b = respond(world, users, slates, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_oracle_beats_every_random_slate(world):
    rng = np.random.default_rng(0)
    k, draws = 5, 300
    users = np.arange(world.n_users)
    ref = reference_ctr(world, users, k)
    assert ref.oracle.shape == ref.random.shape == (world.n_users,)
    for u in users:
        slates = np.stack([rng.choice(world.n_items, k, replace=False) for _ in range(draws)])
        ctr = expected_ctr(world, np.full(draws, u), slates)
        assert ctr.max() <= ref.oracle[u] + 1e-6
        # the random reference is the mean over uniformly random slates
        assert ctr.mean() == pytest.approx(ref.random[u], abs=4 * ctr.std() / np.sqrt(draws))
    assert (ref.oracle > ref.random).all()


def test_oracle_equals_the_brute_force_best_slate(micro_world):
    w, k = micro_world, 3
    slates = np.array(list(itertools.permutations(range(w.n_items), k)))               # [210, 3]
    users = np.arange(w.n_users)
    ref = reference_ctr(w, users, k)
    all_items = np.tile(np.arange(w.n_items), (w.n_users, 1))
    rel = relevance(w, users, all_items)                                               # [U, I]
    for u in users:
        ctr = expected_ctr(w, np.full(len(slates), u), slates)
        best = slates[np.argmax(ctr)]
        assert ref.oracle[u] == pytest.approx(ctr.max(), rel=1e-5)
        # the best slate is the K most relevant items, most relevant first
        np.testing.assert_array_equal(best, np.argsort(-rel[u])[:k])
        # and a uniformly random slate is the mean over all of them
        assert ref.random[u] == pytest.approx(ctr.mean(), rel=1e-5)


def test_reference_ctr_does_not_depend_on_chunking(world):
    users = np.array([0, 5, 5, 19, 2, 7, 11])
    a = reference_ctr(world, users, 4)
    b = reference_ctr(world, users, 4, chunk=2)
    np.testing.assert_allclose(a.oracle, b.oracle)
    np.testing.assert_allclose(a.random, b.random)
    assert a.oracle[1] == a.oracle[2]
