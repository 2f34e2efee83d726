"""sim/traffic.py and sim/rng.py: who arrives when, reproducibly."""
from __future__ import annotations

import numpy as np

from sim.config import ItemConfig, TrafficConfig, UserConfig, WorldConfig
from sim.rng import stream
from sim.traffic import SECONDS_PER_DAY, traffic
from sim.world import make_world

WORLD = make_world(WorldConfig(seed=2, latent_dim=3, users=UserConfig(n=200),
                               items=ItemConfig(n=10, n_categories=2),
                               traffic=TrafficConfig(requests_per_user=2.0)))


def _same(a, b) -> bool:
    return a.day == b.day and all(np.array_equal(getattr(a, f), getattr(b, f))
                                  for f in ("request_id", "user_id", "ts"))


def test_traffic_is_reproducible_from_a_seed():
    a = traffic(WORLD, 3, stream(11, 3, "traffic"))
    b = traffic(WORLD, 3, stream(11, 3, "traffic"))
    assert _same(a, b)
    c = traffic(WORLD, 3, stream(12, 3, "traffic"))
    assert not _same(a, c)


def test_streams_differ_by_seed_day_and_purpose():
    draws = {key: stream(*key).random(4) for key in [(1, 0, "traffic"), (1, 1, "traffic"),
                                                      (2, 0, "traffic"), (1, 0, "clicks")]}
    np.testing.assert_array_equal(stream(1, 0, "traffic").random(4), draws[(1, 0, "traffic")])
    values = list(draws.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not np.array_equal(values[i], values[j])


def test_request_ids_are_unique_across_days():
    days = [traffic(WORLD, d, stream(0, d, "traffic")) for d in range(4)]
    ids = np.concatenate([t.request_id for t in days])
    assert len(ids) > 0
    assert len(np.unique(ids)) == len(ids)
    for d, t in enumerate(days):
        assert t.day == d
        assert t.request_id.dtype == np.int64 and t.ts.dtype == np.int64


def test_requests_of_a_day_are_in_time_order_within_the_day():
    for d in (0, 2):
        t = traffic(WORLD, d, stream(0, d, "traffic"))
        assert len(t.request_id) == len(t.user_id) == len(t.ts)
        assert (np.diff(t.ts) >= 0).all()
        assert t.ts.min() >= d * SECONDS_PER_DAY and t.ts.max() < (d + 1) * SECONDS_PER_DAY
        assert t.user_id.min() >= 0 and t.user_id.max() < WORLD.n_users


def test_request_volume_follows_the_configured_rate():
    # Poisson(rate * activity) per user, activity of mean 1: about 2 * 200 requests a day.
    counts = [len(traffic(WORLD, d, stream(0, d, "traffic")).user_id) for d in range(5)]
    expected = 2.0 * WORLD.n_users
    assert abs(np.mean(counts) - expected) < 5 * np.sqrt(expected / 5)
