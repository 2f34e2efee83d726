"""sim/state.py: state in, state out; drift, churn and return, arrivals; saved and reloaded exactly."""
from __future__ import annotations

import numpy as np
import pytest

from sim.config import BehaviorConfig, ItemConfig, UserConfig, WorldConfig
from sim.state import DayLog, advance, initial_state, load_state, save_state, state_path
from sim.world import make_world

EMPTY = DayLog(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))


def config(**kw) -> WorldConfig:
    users = kw.pop("users", UserConfig(n=4000))
    return WorldConfig(seed=6, latent_dim=8, users=users, items=ItemConfig(n=40, n_categories=4, new_per_day=2),
                       behavior=kw.pop("behavior", BehaviorConfig(fatigue=0.3, drift=0.3)))


def test_advance_is_pure_and_reproducible():
    w = make_world(config(), 1)
    s0 = initial_state(make_world(config(), 0))
    copy = {k: v.copy() for k, v in vars(s0).items() if isinstance(v, np.ndarray)}
    log = DayLog(np.array([1, 2, 2]), np.array([3, 4, 4]), np.array([True, False, True]))
    a, b = advance(w, s0, log), advance(w, s0, log)
    for k, v in copy.items():
        np.testing.assert_array_equal(getattr(s0, k), v, err_msg=k)     # the input is untouched
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert (a.day, len(a.item_clicks)) == (1, 42)
    np.testing.assert_array_equal(a.seen_key, np.array([1, 2], np.int64) * 2**31 + [3, 4])
    np.testing.assert_array_equal(a.seen_count, [1, 2])


def test_advance_needs_the_next_days_arrivals():
    w0 = make_world(config(), 0)
    with pytest.raises(ValueError, match="through day 1"):
        advance(w0, initial_state(w0), EMPTY)


def test_drift_moves_tastes_at_the_configured_pace():
    w = make_world(config(), 1)
    s0 = initial_state(make_world(config(), 0))
    moved = advance(w, s0, EMPTY)
    cos = (moved.user_taste * s0.user_taste).sum(axis=1)
    np.testing.assert_allclose(np.linalg.norm(moved.user_taste, axis=1), 1.0, rtol=1e-5)
    assert 0.8 < cos.mean() < 0.99
    still = make_world(config(behavior=BehaviorConfig(drift=0.0)), 1)
    np.testing.assert_array_equal(advance(still, initial_state(still), EMPTY).user_taste, s0.user_taste)


def test_churn_return_and_relief_by_clicks():
    cfg = config(users=UserConfig(n=20_000, churn_rate=0.2, churn_click_relief=1.0, return_rate=0.5))
    w = make_world(cfg, 2)
    s0 = initial_state(make_world(cfg, 0))
    clickers = np.arange(0, 20_000, 2)                       # even users click: they never churn (relief 1)
    log = DayLog(clickers, np.zeros(len(clickers), np.int64), np.ones(len(clickers), bool))
    s1 = advance(w, s0, log)
    assert s1.user_active[::2].all()
    assert s1.user_active[1::2].mean() == pytest.approx(0.8, abs=0.02)
    churned = ~s1.user_active
    s2 = advance(w, s1, EMPTY)
    assert s2.user_active[churned].mean() == pytest.approx(0.5, abs=0.04)   # half of them come back


def test_new_users_and_items_arrive_active_and_unseen():
    cfg = config(users=UserConfig(n=50, new_per_day=5))
    w = make_world(cfg, 1)
    s1 = advance(w, initial_state(make_world(cfg, 0)), EMPTY)
    assert len(s1.user_taste) == 55 and s1.user_active[50:].all()
    np.testing.assert_array_equal(s1.user_taste[50:], w.user_taste[50:])
    assert len(s1.item_clicks) == 42 and (s1.item_clicks[40:] == 0).all()


def test_save_and_load_round_trip_atomically(tmp_path):
    w = make_world(config(), 1)
    s1 = advance(w, initial_state(make_world(config(), 0)), DayLog(np.array([1]), np.array([3]), np.array([True])))
    path = save_state(s1, tmp_path / "world")
    assert path == state_path(tmp_path / "world", 1)
    assert [p.name for p in path.parent.iterdir()] == [path.name]           # no temporary file left
    back = load_state(tmp_path / "world", 1)
    for k, v in vars(s1).items():
        np.testing.assert_array_equal(getattr(back, k), v, err_msg=k)
    with pytest.raises(FileNotFoundError, match="no world state for day 2"):
        load_state(tmp_path / "world", 2)
