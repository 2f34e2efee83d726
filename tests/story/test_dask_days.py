"""Days served in shards on real Dask worker processes: one worker and three give the same lake,
byte for byte, over the bootstrap day and the days served by the models trained on it."""
from __future__ import annotations

import hashlib

import pytest

from components import samples, training
from components.experiment import load_experiment
from components.features.store import build_features
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import finish_from_files, plan_to_file, serve_shard_to_file
from story.report import report_day
from story.world import publish_catalog

pytestmark = pytest.mark.e2e
DAYS = 3
# Wall clock and micro-batch sizes: measured, so they differ from one run to the next by design.
MEASURED = ("request_latency", "request_channel_latency", "latency_daily", "channel_latency_daily")


def _campaign_on(client, tmp_path, name: str, shards: int):
    """DAYS days of the tiny world; each day's shards served on the cluster's workers."""
    c = create_campaign(tmp_path / name, "t", load_scenario("tiny"), load_experiment("default"), None)
    for day in range(DAYS):
        publish_catalog(c, day)
        build_features(c.lake, day)
        if day == 0:
            models.train_bootstrap(c)
        plan_to_file(c, day)
        futures = [client.submit(serve_shard_to_file, c, day, i, shards, pure=False) for i in range(shards)]
        client.gather(futures)
        finish_from_files(c, day, shards)
        samples.build_samples(c.lake, day)
        training.train_channels(c.lake, day, c.experiment, c.models_dir(day))
        training.train_rankers(c.lake, day, c.experiment, c.models_dir(day))
        report_day(c, day)
    return c


def _digests(c) -> dict[str, str]:
    root = c.data_dir / "lake"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet")) if p.relative_to(root).parts[0] not in MEASURED}


def test_one_and_three_dask_workers_write_the_same_trained_days(tmp_path):
    from distributed import Client, LocalCluster

    lakes = {}
    for workers in (1, 3):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            pids = set(client.run(lambda: __import__("os").getpid()).values())
            assert len(pids) == workers
            lakes[workers] = _digests(_campaign_on(client, tmp_path, f"w{workers}", shards=workers))
    one, three = lakes[1], lakes[3]
    assert {p.split("/")[1] for p in one} == {f"day={d:05d}.parquet" for d in range(DAYS)}
    assert "impressions/day=00002.parquet" in one and "samples/day=00002.parquet" in one
    assert {k for k in one if one[k] != three.get(k)} == set()
    assert one.keys() == three.keys()
