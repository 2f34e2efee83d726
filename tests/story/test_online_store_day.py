"""Days served through the online store's server (a Redis process this test owns), in three shards
sharing item events through it: the tables of one in-process shard, byte for byte, and every logged
vector (computed from what the server returned) reproduced by the samples; and each such day's
cache hits, misses and server round trips in online_store_daily, counted as the server counts them."""
from __future__ import annotations

from dataclasses import replace

import pytest
import redis

from components import samples, training
from components.experiment import load_experiment
from components.features import consistency
from components.features.online import OnlineStoreConfig, publish_features
from components.features.redis_process import RedisServer
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import finish_from_files, plan_to_file, run_day
from story.tables import ONLINE_PREFIX
from story.world import publish_catalog
from tests.story.test_day import DECIDED, serve_side_by_side


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as s:
        yield s


def test_three_shards_on_the_server_store_write_the_tables_of_one_in_process_shard(tmp_path, server):
    base = load_experiment("default")
    remote = replace(base, online_store=OnlineStoreConfig(kind="redis", url=server.url, cache_size=50))
    one = create_campaign(tmp_path / "one", "t", load_scenario("tiny"), base, None)
    three = create_campaign(tmp_path / "three", "t", load_scenario("tiny"), remote, None)
    for day in (0, 1):
        for c in (one, three):
            publish_catalog(c, day)
            publish_features(c.lake, day, c.experiment.online_store)
            if day == 0:
                models.train_bootstrap(c)
        metrics = run_day(one, day)
        plan_to_file(three, day)
        serve_side_by_side(three, day, 3)
        served = finish_from_files(three, day, 3)
        assert {k: v for k, v in served.items() if not k.startswith(ONLINE_PREFIX)} == metrics
        # Embedded: no cache, so no row and no metric (never zeros); the server's: its three caches.
        assert not one.lake.has("online_store_daily", day) and not any(k.startswith(ONLINE_PREFIX) for k in metrics)
        cache = three.lake.read("online_store_daily", day).to_pylist()[0]
        assert cache["shards"] == 3 and cache["lookups"] == one.lake.read("requests", day).num_rows
        assert served[f"{ONLINE_PREFIX}lookups"] == cache["lookups"]
        for table in DECIDED:
            assert one.lake.path(table, day).read_bytes() == three.lake.path(table, day).read_bytes(), (day, table)
        for c in (one, three):
            samples.build_samples(c.lake, day)
            assert consistency.check(c.lake, day)["match_rate"] == 1.0
            c.models_dir(day).mkdir(parents=True)
            training.train_channels(c.lake, day, c.experiment, c.models_dir(day))
            training.train_rankers(c.lake, day, c.experiment, c.models_dir(day))
    assert three.lake.read("samples", 1).column("rt_i_clicks_1h").to_numpy().max() > 0


def test_a_day_on_the_server_records_its_cache_hits_misses_and_round_trips(tmp_path, server):
    cfg = OnlineStoreConfig(kind="redis", url=server.url, cache_size=40, cache_ttl_s=3600)
    c = create_campaign(tmp_path / "c", "t", load_scenario("tiny"), replace(load_experiment("default"),
                                                                           online_store=cfg), None)
    publish_catalog(c, 0)
    publish_features(c.lake, 0, cfg)
    models.train_bootstrap(c)
    client = redis.Redis.from_url(server.url)
    before = client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    metrics = run_day(c, 0)
    calls = client.info("commandstats")["cmdstat_hmget"]["calls"] - before
    row = c.lake.read("online_store_daily", 0).to_pylist()[0]
    requests = c.lake.read("requests", 0).to_pandas()
    assert row["lookups"] == len(requests) == row["hits"] + row["misses"]          # one lookup a request
    assert row["misses"] >= requests["user_id"].nunique() > 40                     # each user once, more than fit
    assert row["hits"] > 0 and row["hit_rate"] == pytest.approx(row["hits"] / row["lookups"])
    assert row["round_trips"] == calls > 0                                         # as the server counted them
    assert 0 < row["server_p50_ms"] <= row["server_p99_ms"] and row["server_mean_ms"] > 0
    assert (row["shards"], row["cache_size"], row["cache_ttl_s"]) == (1, 40, 3600.0)
    figures = {k.removeprefix(ONLINE_PREFIX): v for k, v in metrics.items() if k.startswith(ONLINE_PREFIX)}
    assert figures == {k: float(v) for k, v in row.items() if k not in ("day", "cache_size", "cache_ttl_s")}
