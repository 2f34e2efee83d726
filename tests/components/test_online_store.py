"""The online store on a real Redis server (a process this module owns): the same UserBatch as the
in-process store, a local cache tier with its size and TTL, and one-line errors."""
from __future__ import annotations

import time
from dataclasses import fields

import numpy as np
import pytest

from common.typedconf import ConfigError, from_mapping
from components.experiment import ExperimentConfig, load_experiment
from components.features.online import (Keys, OnlineStoreConfig, OnlineStoreError, ServerStore, open_bus, open_store,
                                        publish_features, sync)
from components.features.redis_process import RedisServer
from components.features.store import FeatureStore
from components.features.stream import FileBus, MemoryBus, ShardWaitError
from tests.components.test_feature_definitions import DAYS, USERS, lake  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as s:
        yield s


def _redis(server, **kw) -> OnlineStoreConfig:
    return OnlineStoreConfig(kind="redis", url=server.url, **kw)


def assert_same_batch(a, b) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "features":
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k
        elif f.name == "items":
            assert x.impressions.tobytes() == y.impressions.tobytes() and x.clicks.tobytes() == y.clicks.tobytes()
            assert x.columns.keys() == y.columns.keys()
            assert all(x.columns[k].tobytes() == y.columns[k].tobytes() for k in x.columns)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), f.name
        else:
            assert x == y, f.name


def test_the_server_store_gives_the_in_process_batch_byte_for_byte(lake, server):  # noqa: F811
    cfg = _redis(server)
    for day in range(DAYS):
        assert sync(lake, day, cfg) == lake.read("features_user", day).num_rows
        inproc, remote = open_store(lake, day, None, OnlineStoreConfig()), open_store(lake, day, None, cfg)
        assert isinstance(inproc, FeatureStore) and isinstance(remote, ServerStore)
        users = np.array([*range(USERS), 999, 3, -1])                 # unknown users, a repeat
        rids = np.arange(len(users)) + 100
        rt = {"rt_u_impressions_1h": np.arange(len(users)), "rt_u_clicks_1h": np.ones(len(users), np.int64)}
        assert_same_batch(inproc.user_batch(users, rids, rt), remote.user_batch(users, rids, rt))
        for u in users:                                                # batch 1, now from the cache
            assert_same_batch(inproc.user_batch(np.array([u])), remote.user_batch(np.array([u])))
    assert remote.misses == len(users) and remote.hits == len(users)    # 3, twice in one batch, misses twice
    # The day before yesterday is gone from the server; yesterday and today stay.
    client, keys = remote.client, Keys.of(lake, DAYS - 1)
    assert client.exists(keys.users(DAYS - 1)) and client.exists(keys.users(DAYS - 2))
    assert DAYS < 3 or not client.exists(keys.users(DAYS - 3))


def test_the_cache_tier_keeps_its_size_and_reads_stale_rows_again(lake, server):  # noqa: F811
    sync(lake, 1, _redis(server))
    small = ServerStore.open(lake, 1, _redis(server, cache_size=2))
    small.user_batch(np.array([0, 1, 2]))
    assert list(small.cache_) == [1, 2] and small.misses == 3
    small.user_batch(np.array([2, 1, 0]))                      # 2, 1 hit; 0 was evicted, 2 goes next
    assert (small.hits, small.misses) == (2, 4) and list(small.cache_) == [1, 0]
    brief = ServerStore.open(lake, 1, _redis(server, cache_ttl_s=0.05))
    brief.user_batch(np.array([0]))
    brief.user_batch(np.array([0]))
    time.sleep(0.1)
    brief.user_batch(np.array([0]))
    assert (brief.hits, brief.misses) == (1, 2) and brief.hit_rate == pytest.approx(1 / 3)
    none = ServerStore.open(lake, 1, _redis(server, cache_size=0))
    none.user_batch(np.array([0, 0]))
    none.user_batch(np.array([0]))
    assert none.hits == 0 and not none.cache_


def test_a_server_it_cannot_reach_or_a_day_not_synced_is_one_line(lake, server):  # noqa: F811
    from components.features.redis_process import free_port

    dead = OnlineStoreConfig(kind="redis", url=f"redis://127.0.0.1:{free_port()}/0")
    for call in (lambda: publish_features(lake, 1, dead), lambda: open_store(lake, 1, None, dead)):
        with pytest.raises(OnlineStoreError, match="cannot reach the Redis server at redis://127.0.0.1") as err:
            call()
        assert "\n" not in str(err.value)
    server_keys = Keys.of(lake, 2)
    _ = open_store(lake, 2, None, OnlineStoreConfig())       # embedded: no server needed
    import redis

    client = redis.Redis.from_url(server.url)
    client.set(server_keys.ready(), "u_impressions;recent<=5")
    with pytest.raises(OnlineStoreError, match="day 2's rows on .* have another layout"):
        open_store(lake, 2, None, _redis(server))
    client.delete(server_keys.ready())
    with pytest.raises(OnlineStoreError, match="day 2's features are not on the server"):
        open_store(lake, 2, None, _redis(server))


def test_the_online_store_setting_is_typed():
    exp = load_experiment("default")
    assert exp.online_store == OnlineStoreConfig() and exp.online_store.kind == "embedded"
    raw = {"name": "x", "control": "a", "arms": {"a": {"channels": {"popular": 20}, "share": 100.0}}}
    ok = from_mapping(ExperimentConfig, raw | {"online_store": {"kind": "redis", "url": "redis://h:1/0",
                                                                "cache_size": 10, "cache_ttl_s": 5}}, "e")
    assert ok.online_store == OnlineStoreConfig("redis", "redis://h:1/0", 10, 5.0)
    for bad, match in (({"kind": "memcached"}, "e.online_store.kind"), ({"cache_sise": 1}, "cache_sise"),
                       ({"cache_size": -1}, "e.online_store.cache_size"), ({"url": "http://h"}, "e.online_store.url")):
        with pytest.raises(ConfigError, match=match):
            from_mapping(ExperimentConfig, raw | {"online_store": bad}, "e")


def test_shards_meet_on_the_bus_and_a_missing_shard_is_named(lake, server, tmp_path):  # noqa: F811
    assert isinstance(open_bus(lake, 0, OnlineStoreConfig(), 1, tmp_path), MemoryBus)
    files = open_bus(lake, 0, OnlineStoreConfig(shard_wait_s=0.2), 2, tmp_path / "bus")
    remote = open_bus(lake, 0, _redis(server, shard_wait_s=0.2), 2, tmp_path)
    assert isinstance(files, FileBus)
    for bus in (files, remote):
        bus.put(5, 1, b"\x01")
        with pytest.raises(ShardWaitError, match=r"shards \[0\] gave no events within 0.2 s"):
            bus.gather(5)
        bus.put(5, 0, b"")
        assert bus.gather(5) == [b"", b"\x01"]
