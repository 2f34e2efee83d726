"""Days served through the online store's server (a Redis process this test owns), in three shards
sharing item events through it: the tables of one in-process shard, byte for byte, and every logged
vector (computed from what the server returned) reproduced by the samples."""
from __future__ import annotations

from dataclasses import replace

import pytest

from components import samples, training
from components.experiment import load_experiment
from components.features import consistency
from components.features.online import OnlineStoreConfig, publish_features
from components.features.redis_process import RedisServer
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import finish_from_files, plan_to_file, run_day
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
        assert finish_from_files(three, day, 3) == metrics
        for table in DECIDED:
            assert one.lake.path(table, day).read_bytes() == three.lake.path(table, day).read_bytes(), (day, table)
        for c in (one, three):
            samples.build_samples(c.lake, day)
            assert consistency.check(c.lake, day)["match_rate"] == 1.0
            c.models_dir(day).mkdir(parents=True)
            training.train_channels(c.lake, day, c.experiment, c.models_dir(day))
            training.train_rankers(c.lake, day, c.experiment, c.models_dir(day))
    assert three.lake.read("samples", 1).column("rt_i_clicks_1h").to_numpy().max() > 0
