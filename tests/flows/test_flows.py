"""Stage flows under a real temporary Prefect server: typed parameters, clear errors."""
from __future__ import annotations

import pytest

from components.lake import MissingPartitionError
from flows.campaign import campaign, daily
from flows.stages import build_samples, report, simulate_day, train
from components.experiment import load_experiment
from sim.config import load_scenario
from story.campaign import create_campaign


def test_flows_have_typed_parameters():
    for f in (campaign, daily, simulate_day, build_samples, train, report):
        schema = f.parameters.model_dump()["properties"]
        assert "data_dir" in schema
        for name, prop in schema.items():
            assert "type" in prop or "anyOf" in prop, (f.name, name)
    assert campaign.parameters.properties["days"]["type"] == "integer"


def test_missing_partition_is_a_clear_error(prefect_server, tmp_path):
    create_campaign(tmp_path, "t", load_scenario("tiny"), load_experiment("default"), None)
    with pytest.raises(MissingPartitionError, match="table 'impressions' has no partition for that day"):
        build_samples(data_dir=str(tmp_path), day=0)


def test_simulate_day_writes_the_day_and_fails_runs_cleanly(prefect_server, tmp_path):
    c = create_campaign(tmp_path, "t", load_scenario("tiny"), load_experiment("default"), None)
    metrics = simulate_day(data_dir=str(tmp_path), day=0)
    assert metrics["logging.requests"] > 0
    assert c.lake.days("impressions") == [0]
    # Day 2 has no day-1 models: the flow fails with the reason, and its MLflow run says FAILED.
    with pytest.raises(MissingPartitionError, match="run the days in order"):
        simulate_day(data_dir=str(tmp_path), day=2)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(c.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    status = {r.info.run_name: r.info.status for r in runs}
    assert status == {"day-0/simulate": "FINISHED", "day-2/simulate": "FAILED"}


def test_build_samples_is_cached_while_its_inputs_are_unchanged(prefect_server, tmp_path):
    c = create_campaign(tmp_path, "cache", load_scenario("tiny"), load_experiment("default"), None)
    simulate_day(data_dir=str(tmp_path), day=0)
    first = build_samples(data_dir=str(tmp_path), day=0)
    build_samples(data_dir=str(tmp_path), day=0)          # same inputs: stored under their key
    written = c.lake.path("samples", 0).stat().st_mtime_ns
    assert build_samples(data_dir=str(tmp_path), day=0) == first
    assert c.lake.path("samples", 0).stat().st_mtime_ns == written   # cached: not rebuilt
    c.lake.path("samples", 0).unlink()                    # a lost output is rebuilt, never skipped
    assert build_samples(data_dir=str(tmp_path), day=0) == first
    assert c.lake.has("samples", 0)
