"""sim/behavior.py: the choice model, each of its knobs, and the oracle."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from sim.behavior import (choose, click_probability, examination, oracle_sample, reference_ctr,
                          request_uniform, respond, utility)
from sim.config import BehaviorConfig, ItemConfig, UserConfig, WorldConfig
from sim.state import DayLog, advance, initial_state
from sim.world import make_world


def make(behavior: BehaviorConfig | None = None, users: int = 20, items: int = 30, days: int = 0, **kw):
    cfg = WorldConfig(seed=5, latent_dim=4, collab_dim=3, users=UserConfig(n=users),
                      items=ItemConfig(n=items, n_categories=3, new_per_day=kw.pop("new_items", 0)),
                      behavior=behavior or BehaviorConfig(base_logit=-1.0), **kw)
    w = make_world(cfg, days)
    return w, initial_state(make_world(cfg, 0))


@pytest.fixture(scope="module")
def world():
    return make()


def test_examination_falls_with_rank(world):
    e = examination(world[0], 6)
    assert e[0] == 1.0 and (np.diff(e) < 0).all()


def test_probabilities_leave_room_for_no_click(world):
    w, s = world
    users = np.arange(w.n_users)
    slates = np.stack([np.roll(np.arange(w.n_items), -u)[:6] for u in users])
    p = click_probability(w, s, users, slates)
    assert p.shape == (w.n_users, 6) and (p > 0).all()
    assert (p.sum(axis=1) < 1).all()                       # the no-click option keeps some mass
    lazy = dataclasses.replace(w.config, behavior=dataclasses.replace(w.config.behavior, no_click_utility=3.0))
    assert (click_probability(dataclasses.replace(w, config=lazy), s, users, slates).sum(axis=1) < p.sum(axis=1)).all()


def test_position_bias_the_same_item_lower_in_the_slate_is_clicked_less(world):
    w, s = world
    users = np.arange(w.n_users)
    first = np.stack([[u % w.n_items, 29, 28, 27] for u in users])
    last = first[:, [1, 2, 3, 0]]
    assert (click_probability(w, s, users, first)[:, 0] > click_probability(w, s, users, last)[:, 3]).all()


def test_empty_slots_are_never_clicked(world):
    w, s = world
    p = click_probability(w, s, np.array([0, 1]), np.array([[3, -1, 4], [-1, -1, -1]]))
    assert p[0, 1] == 0 and (p[1] == 0).all() and p[0, 0] > 0


def test_respond_draws_at_most_one_click_per_request_at_the_right_rate(world):
    w, s = world
    rng = np.random.default_rng(123)
    users = np.tile(np.arange(w.n_users), 400)                                       # [8000]
    slates = np.stack([rng.choice(w.n_items, 5, replace=False) for _ in users])     # [8000, 5]
    p = click_probability(w, s, users, slates)
    clicks = respond(w, s, users, slates, rng.random(len(users))).clicked
    assert clicks.dtype == bool and clicks.shape == slates.shape
    assert clicks.sum(axis=1).max() == 1
    sd = np.sqrt((p * (1 - p)).sum(axis=0))
    assert (np.abs(clicks.sum(axis=0) - p.sum(axis=0)) < 4 * sd).all()


def test_choose_is_a_pure_function_of_the_uniform():
    p = np.array([[0.2, 0.1, 0.3]])
    assert [int(np.flatnonzero(choose(p, np.array([u])))[0]) for u in (0.0, 0.19, 0.2, 0.35, 0.59)] == [0, 0, 1, 2, 2]
    assert not choose(p, np.array([0.61])).any()
    np.testing.assert_array_equal(request_uniform(1, 2, np.array([5, 9]))[1], request_uniform(1, 2, np.array([9]))[0])


def test_content_weight_picks_content_or_collaborative_taste():
    w, s = make(BehaviorConfig(content_weight=1.0))
    users, items = np.arange(w.n_users), np.tile(np.arange(w.n_items), (w.n_users, 1))
    u_content = utility(w, s, users, items) - w.item_quality[items]
    np.testing.assert_allclose(u_content, -3.0 + 3.0 * (s.user_taste @ w.item_latent.T), rtol=1e-4, atol=1e-4)
    w0 = dataclasses.replace(w, config=dataclasses.replace(
        w.config, behavior=dataclasses.replace(w.config.behavior, content_weight=0.0)))
    u_collab = utility(w0, s, users, items) - w.item_quality[items]
    np.testing.assert_allclose(u_collab, -3.0 + 3.0 * (w.user_collab @ w.item_collab.T), rtol=1e-4, atol=1e-4)


def test_fatigue_lowers_the_utility_of_items_shown_before_and_wears_off():
    w, s = make(BehaviorConfig(fatigue=0.5, fatigue_decay=0.5), days=3)
    users, items = np.array([0, 0, 1]), np.array([[4], [5], [4]])
    before = utility(w, s, users, items)
    log = DayLog(np.array([0, 0]), np.array([4, 4]), np.array([False, False]))     # item 4 shown twice to user 0
    s1 = advance(w, s, log)
    after = utility(w, s1, users, items)
    assert after[0, 0] == pytest.approx(before[0, 0] - 0.5 * 2)
    assert after[1, 0] == pytest.approx(before[1, 0]) and after[2, 0] == pytest.approx(before[2, 0])
    s2 = advance(w, s1, DayLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)))
    assert utility(w, s2, users, items)[0, 0] == pytest.approx(before[0, 0] - 0.5 * 1)


def test_popularity_emerges_from_clicks():
    w, s = make(BehaviorConfig(popularity_scale=0.4, popularity_decay=0.5), days=2)
    log = DayLog(np.arange(10), np.full(10, 7), np.arange(10) < 6)                  # item 7: 6 clicks
    s1 = advance(w, s, log)
    users, items = np.arange(3), np.array([[7], [7], [8]])
    gain = utility(w, s1, users, items) - utility(w, s, users, items)
    assert gain[0, 0] == pytest.approx(0.4 * np.log1p(6), rel=1e-4) and gain[2, 0] == pytest.approx(0)
    s2 = advance(w, s1, DayLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)))
    assert s2.item_clicks[7] == pytest.approx(3.0)                                   # halved a day later


def test_novelty_favours_new_arrivals_and_fades():
    w, s0 = make(BehaviorConfig(novelty=1.0, novelty_days=2.0), new_items=5, days=4)
    empty = DayLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    states = [s0]
    for _ in range(4):
        states.append(advance(w, states[-1], empty))
    new_item, old_item = np.array([[30]]), np.array([[0]])                           # item 30 arrives on day 1
    user = np.array([2])
    bonus = [float(utility(w, st, user, new_item)[0, 0]) for st in states[1:]]
    assert bonus[0] - bonus[1] == pytest.approx(1.0 - np.exp(-0.5), rel=1e-4)
    assert bonus[0] > bonus[1] > bonus[2] > bonus[3]
    olds = [float(utility(w, st, user, old_item)[0, 0]) for st in states]
    assert max(olds) - min(olds) == pytest.approx(0, abs=1e-6)                      # day-0 items are not news


def test_oracle_beats_every_random_slate_and_random_reference_is_their_mean(world):
    w, s = world
    rng = np.random.default_rng(0)
    k, draws = 5, 300
    users = np.arange(w.n_users)
    ref = reference_ctr(w, s, users, k, users + 100, day=0, draws=400)
    for u in users:
        slates = np.stack([rng.choice(w.n_items, k, replace=False) for _ in range(draws)])
        ctr = click_probability(w, s, np.full(draws, u), slates).mean(axis=1)
        assert ctr.max() <= ref.oracle[u] + 1e-6
        assert ctr.mean() == pytest.approx(ref.random[u], abs=5 * ctr.std() / np.sqrt(draws))
    assert (ref.oracle > ref.random).all()


def test_oracle_is_exact_with_fatigue_novelty_and_popularity_in_the_state():
    w, s = make(BehaviorConfig(fatigue=0.8, novelty=1.0, popularity_scale=0.3, drift=0.2),
                users=6, items=6, new_items=1, days=1)
    s1 = advance(w, s, DayLog(np.array([0, 0, 1, 2]), np.array([1, 1, 2, 1]), np.array([True, False, True, False])))
    k = 3
    slates = np.array(list(itertools.permutations(range(w.n_items), k)))              # every ordered slate
    users = np.arange(w.n_users)
    ref = reference_ctr(w, s1, users, k, users, day=1)
    for u in users:
        ctr = click_probability(w, s1, np.full(len(slates), u), slates).mean(axis=1)
        assert ref.oracle[u] == pytest.approx(ctr.max(), rel=1e-5)


def test_oracle_is_exact_for_short_slates_and_bounds_the_effect_arm():
    """A pipeline may serve fewer items than the slate size, and the effect's arm is answered with
    lifted probabilities: per shown item, no served slate of a request's length beats its oracle."""
    from sim.effects import EffectConfig, favour

    w, s = make(users=5, items=6, effect=EffectConfig(arm="treatment", logit=1.5))
    k, users = 4, np.arange(5)
    for n in (0, 1, 2, 3):
        ref = reference_ctr(w, s, users, k, users, day=0, shown=np.full(5, n), draws=4000)
        lifted = reference_ctr(w, s, users, k, users, day=0, shown=np.full(5, n), favoured=np.ones(5, bool))
        if n == 0:
            assert (ref.oracle == 0).all() and (ref.random == 0).all()
            continue
        slates = np.array(list(itertools.permutations(range(w.n_items), n)))       # every ordered slate of n
        for u in users:
            p = click_probability(w, s, np.full(len(slates), u), slates)               # [S, n]
            np.testing.assert_allclose(ref.oracle[u], p.sum(axis=1).max() / n, rtol=1e-5)
            np.testing.assert_allclose(ref.random[u], p.sum(axis=1).mean() / n, rtol=0.05)
            best = favour(p, np.ones(len(slates), bool), 1.5).sum(axis=1).max() / n
            assert best <= lifted.oracle[u] * (1 + 1e-3) and lifted.oracle[u] > ref.oracle[u]


def test_reference_ctr_does_not_depend_on_chunking_or_company(world):
    w, s = world
    users, rids = np.array([0, 5, 5, 19, 2, 7, 11]), np.arange(7) * 13
    a = reference_ctr(w, s, users, 4, rids, day=3)
    b = reference_ctr(w, s, users, 4, rids, day=3, chunk=2)
    c = reference_ctr(w, s, users[3:5], 4, rids[3:5], day=3)
    np.testing.assert_allclose(a.oracle, b.oracle)
    np.testing.assert_allclose(a.random, b.random)
    np.testing.assert_allclose(a.random[3:5], c.random)


def test_oracle_sample_is_a_stable_fraction():
    ids = np.arange(100_000)
    m = oracle_sample(1, 2, ids, len(ids), 2_000)
    assert abs(m.sum() - 2_000) < 200
    np.testing.assert_array_equal(oracle_sample(1, 2, ids[::3], len(ids), 2_000), m[::3])
    assert oracle_sample(1, 2, ids, len(ids), 0).all()
