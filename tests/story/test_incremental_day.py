"""The incremental preset through a tiny campaign: the treatment arm's models move within the day
(and serve), the control's do not, updates are timed, a re-run is the same, shards are refused."""
from __future__ import annotations

import pytest
import torch

from common.typedconf import ConfigError
from components import samples, training
from components.experiment import load_experiment
from components.features.store import build_features
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import plan_to_file, run_day, serve_shard_to_file
from story.models import pipelines_from_folder
from story.plan import plan_day
from story.report import report_day
from story.world import publish_catalog


def _through_day_0(tmp_path, name):
    c = create_campaign(tmp_path / name, "t", load_scenario("tiny"), load_experiment("incremental"), None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    models.train_bootstrap(c)
    run_day(c, 0)
    samples.build_samples(c.lake, 0)
    training.train_channels(c.lake, 0, c.experiment, c.models_dir(0))
    training.train_rankers(c.lake, 0, c.experiment, c.models_dir(0))
    publish_catalog(c, 1)
    build_features(c.lake, 1)
    return c


def _rows(pipe):
    return [p.detach().clone() for p in pipe.ranker.id_parameters()]


def test_the_incremental_arm_learns_within_the_day_and_a_rerun_is_the_same(tmp_path):
    c = _through_day_0(tmp_path, "a")
    arms = plan_day(c, 1).arms
    fresh, pipes = pipelines_from_folder(c, 1, arms), pipelines_from_folder(c, 1, arms)
    run_day(c, 1, pipes)
    # The control's models are the daily ones at the end of the day; the incremental arm's moved.
    assert all(torch.equal(a, b) for a, b in zip(_rows(pipes["daily"]), _rows(fresh["daily"])))
    assert any(not torch.equal(a, b) for a, b in zip(_rows(pipes["incremental"]), _rows(fresh["incremental"])))
    grown, daily = pipes["incremental"].channels["popular"].scores_, fresh["incremental"].channels["popular"].scores_
    assert len(grown) > len(daily)                  # the day's new items have popularity scores too
    assert (grown[:len(daily)] != daily).any()
    updates = c.lake.read("update_latency", 1).to_pandas()
    every = c.experiment.arms["incremental"].incremental.every
    assert len(updates) > 3 and set(updates["arm"]) == {"incremental"}
    assert (updates["micro_batch"] % every == 0).all() and (updates["impressions"] > 0).all()
    assert (updates["total_ms"] >= updates["ranker_ms"]).all()
    report_day(c, 1)
    latency = c.lake.read("latency_daily", 1).to_pandas()
    update_rows = latency[latency["stage"] == "update"]
    assert update_rows["arm"].tolist() == ["incremental"] and update_rows["requests"].iloc[0] == len(updates)

    again = _through_day_0(tmp_path, "b")
    run_day(again, 1)
    for table in ("impressions", "requests", "world_daily", "features_online"):
        assert c.lake.path(table, 1).read_bytes() == again.lake.path(table, 1).read_bytes(), table
    same = again.lake.read("update_latency", 1).to_pandas()
    cols = ["micro_batch", "impressions", "clicks"]
    assert same[cols].equals(updates[cols])


def test_an_incremental_arm_refuses_shards(tmp_path):
    c = _through_day_0(tmp_path, "s")
    plan_to_file(c, 1)
    with pytest.raises(ConfigError, match="arm incremental .* serve it in one shard"):
        serve_shard_to_file(c, 1, 0, 2)
