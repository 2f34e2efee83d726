"""sim/traffic.py and sim/rng.py: who arrives when, reproducibly, shardable."""
from __future__ import annotations

import dataclasses

import numpy as np

from sim.config import ItemConfig, TrafficConfig, UserConfig, WorldConfig
from sim.rng import keyed_uniform, shard_of, stream
from sim.state import initial_state
from sim.traffic import SECONDS_PER_DAY, hourly_profile, traffic
from sim.world import make_world

CFG = WorldConfig(seed=2, latent_dim=3, users=UserConfig(n=2000), items=ItemConfig(n=10, n_categories=2),
                  traffic=TrafficConfig(sessions_per_user=1.5, requests_per_session=2.0, peak_hour=20,
                                        diurnal_amplitude=0.8))
WORLD = make_world(CFG)
STATE = initial_state(WORLD)


def _same(a, b) -> bool:
    return a.day == b.day and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("request_id", "user_id", "ts"))


def test_traffic_is_reproducible_from_a_seed():
    a = traffic(WORLD, STATE, 3, stream(11, 3, "traffic"))
    assert _same(a, traffic(WORLD, STATE, 3, stream(11, 3, "traffic")))
    assert not _same(a, traffic(WORLD, STATE, 3, stream(12, 3, "traffic")))


def test_streams_and_keyed_uniforms_differ_by_seed_day_and_purpose():
    draws = {key: stream(*key).random(4) for key in [(1, 0, "a"), (1, 1, "a"), (2, 0, "a"), (1, 0, "b")]}
    values = list(draws.values())
    assert all(not np.array_equal(values[i], values[j]) for i in range(4) for j in range(i + 1, 4))
    keys = np.arange(10_000)
    u = keyed_uniform(1, 0, "a", keys)
    assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.02
    assert not np.array_equal(u, keyed_uniform(1, 1, "a", keys))
    assert not np.array_equal(u, keyed_uniform(1, 0, "b", keys))
    # one key's draw does not depend on the others drawn with it
    np.testing.assert_array_equal(keyed_uniform(1, 0, "a", keys[[7, 3]]), u[[7, 3]])


def test_request_ids_unique_and_time_ordered_within_the_day():
    days = [traffic(WORLD, STATE, d, stream(0, d, "traffic")) for d in range(3)]
    ids = np.concatenate([t.request_id for t in days])
    assert len(np.unique(ids)) == len(ids) > 0
    for d, t in enumerate(days):
        assert (np.diff(t.ts) >= 0).all()
        assert t.ts.min() >= d * SECONDS_PER_DAY and t.ts.max() < (d + 1) * SECONDS_PER_DAY


def test_volume_follows_sessions_times_requests_per_session():
    counts = [len(traffic(WORLD, STATE, d, stream(0, d, "traffic")).user_id) for d in range(5)]
    expected = 1.5 * 2.0 * WORLD.n_users * WORLD.user_activity.mean()
    assert abs(np.mean(counts) - expected) < 0.05 * expected


def test_sessions_follow_the_time_of_day():
    t = traffic(WORLD, STATE, 0, stream(0, 0, "traffic"))
    hours = np.bincount(t.ts // 3600 % 24, minlength=24)
    profile = hourly_profile(CFG.traffic)
    assert profile.argmax() == 20 and profile.argmin() == 8
    assert hours[19:22].sum() > 3 * hours[7:10].sum()
    flat = dataclasses.replace(CFG, traffic=dataclasses.replace(CFG.traffic, diurnal_amplitude=0.0))
    np.testing.assert_allclose(hourly_profile(flat.traffic), 1 / 24)


def test_heavy_users_send_more_requests():
    t = traffic(WORLD, STATE, 0, stream(0, 0, "traffic"))
    per_user = np.bincount(t.user_id, minlength=WORLD.n_users)
    heavy = WORLD.user_activity > np.quantile(WORLD.user_activity, 0.9)
    light = WORLD.user_activity < np.quantile(WORLD.user_activity, 0.5)
    assert per_user[heavy].mean() > 4 * per_user[light].mean()


def test_churned_users_send_nothing():
    state = dataclasses.replace(STATE, user_active=np.arange(WORLD.n_users) % 2 == 0)
    t = traffic(WORLD, state, 0, stream(0, 0, "traffic"))
    assert len(t.user_id) > 0 and (t.user_id % 2 == 0).all()


def test_shards_partition_the_requests_by_user():
    t = traffic(WORLD, STATE, 0, stream(0, 0, "traffic"))
    parts = [t.shard(i, 3) for i in range(3)]
    assert sum(len(p.user_id) for p in parts) == len(t.user_id)
    assert all(len(p.user_id) > 0.2 * len(t.user_id) for p in parts)
    users = [set(p.user_id.tolist()) for p in parts]
    assert not (users[0] & users[1]) and not (users[1] & users[2])
    np.testing.assert_array_equal(shard_of(np.arange(50), 1), 0)
