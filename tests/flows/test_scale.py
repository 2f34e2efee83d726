"""Sharding by user-id hash: the same lake tables and world state for 1 and 3 shards, local or on Dask."""
from __future__ import annotations

import numpy as np
import pytest

from common.typedconf import ConfigError
from components.experiment import load_experiment
from flows.scale import check
from flows.stages import simulate_day
from sim.config import load_scenario
from sim.state import load_state
from story.campaign import create_campaign

MEASURED = {"batch_size", "recall_ms", "merge_ms", "rank_ms", "total_ms"}   # wall clock, batching: differ by design


def _day0(tmp_path, name, **scale):
    c = create_campaign(tmp_path / name, "t", load_scenario("tiny"), load_experiment("default"), None)
    simulate_day(data_dir=str(c.data_dir), day=0, **scale)
    return c


def _tables(c):
    out = {}
    for table in ("items", "users", "requests", "impressions", "world_daily"):
        t = c.lake.read(table, 0)
        out[table] = t.select([n for n in t.column_names if n not in MEASURED]).to_pylist()
    return out


def _assert_same(a, b):
    ta, tb = _tables(a), _tables(b)
    for table in ta:
        assert len(ta[table]) > 0 or table in ("items", "users")
        assert ta[table] == tb[table], table
    sa, sb = load_state(a.world_dir, 1), load_state(b.world_dir, 1)
    for key, value in vars(sa).items():
        np.testing.assert_array_equal(getattr(sb, key), value, err_msg=key)


def test_three_local_shards_give_the_same_day_as_one(prefect_server, tmp_path):
    one = _day0(tmp_path, "one")
    three = _day0(tmp_path, "three", shards=3)
    _assert_same(one, three)
    assert not list(three.world_dir.glob("shards-*"))          # shard files are cleaned up


def test_dask_shards_give_the_same_day_as_one(prefect_server, tmp_path):
    one = _day0(tmp_path, "one")
    dask = _day0(tmp_path, "dask", scale="dask", shards=2)
    _assert_same(one, dask)


def test_bad_scale_settings_are_config_errors():
    with pytest.raises(ConfigError, match="--scale: 'spark' is not allowed"):
        check("spark", 1)
    with pytest.raises(ConfigError, match="--shards: must be at least 1"):
        check("local", 0)
