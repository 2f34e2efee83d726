"""Per-channel recall latency, logged per request by the serving path and summarised per day."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from components import reports
from components.features.store import build_features
from components.experiment import load_experiment
from components.serving import ArmConfig, Pipeline
from components.types import Candidates, pad_rows
from story import models
from story.campaign import create_campaign
from story.day import run_day
from story.plan import BOOTSTRAP_ARM
from story.world import publish_catalog
from sim.config import load_scenario

SLEEP_S = 0.05


class SleepyRecaller:
    """A channel that takes SLEEP_S per batch (sleep releases the GIL, as torch and numpy do)."""

    def __init__(self, items):
        self.items = list(items)

    def recall(self, users, k):
        time.sleep(SLEEP_S)
        items = pad_rows([np.asarray(self.items, np.int64)] * len(users), k, -1, np.int64)
        return Candidates(items=items, scores=np.where(items >= 0, 1.0, 0.0).astype(np.float32))


def _day0(tmp_path, logging_policy: ArmConfig, pipelines=None):
    """Serve day 0 of a tiny campaign (optionally with stand-in pipelines); its per-request latency tables."""
    exp = replace(load_experiment("default"), logging_policy=logging_policy, serve_batch_size=512)
    c = create_campaign(tmp_path, "t", load_scenario("tiny"), exp, None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    if pipelines is None:
        models.train_bootstrap(c)
    run_day(c, 0, pipelines)
    with c.lake.connect() as con:
        per_channel = con.sql("""SELECT request_id, l.recall_ms, max(ms) AS slowest, sum(ms) AS total,
                                        count(*) AS channels, list(channel ORDER BY channel) AS names
                                 FROM request_channel_latency JOIN request_latency l USING (day, request_id, arm)
                                 GROUP BY ALL""").df()
        requests = con.execute("SELECT count(*) FROM requests").fetchone()[0]
    return c, per_channel, requests


def test_real_channels_are_logged_for_every_request(tmp_path):
    arm = ArmConfig(channels={"popular": 20, "explore": 20}, share=100.0, parallel_recall=True)
    c, rows, requests = _day0(tmp_path, arm)
    assert len(rows) == requests > 0
    assert (rows["channels"] == 2).all() and all(list(n) == ["explore", "popular"] for n in rows["names"])
    assert (rows["recall_ms"] >= rows["slowest"]).all()
    daily = reports.channel_latency_daily(c.lake, 0).to_pylist()
    assert sorted(r["channel"] for r in daily) == ["explore", "popular"]
    for r in daily:
        assert r["arm"] == BOOTSTRAP_ARM and r["requests"] == requests
        assert 0 <= r["p50"] <= r["p95"] <= r["p99"]


@pytest.mark.parametrize("parallel", [True, False])
def test_recall_takes_the_slowest_channel_in_parallel_and_the_sum_serially(tmp_path, parallel):
    quotas = {"a": 3, "b": 3, "c": 4}
    arm = ArmConfig(channels=quotas, share=100.0, parallel_recall=parallel)
    channels = {"a": SleepyRecaller([1, 2, 3]), "b": SleepyRecaller([4, 5, 6]), "c": SleepyRecaller([7, 8, 9])}
    pipelines = {BOOTSTRAP_ARM: Pipeline(arm, 10, channels, None)}
    _, rows, requests = _day0(tmp_path, arm, pipelines)
    assert len(rows) == requests > 0 and (rows["channels"] == 3).all()
    assert (rows["slowest"] >= SLEEP_S * 1000).all()
    assert (rows["recall_ms"] >= rows["slowest"]).all()
    if parallel:
        # Three channels of 50 ms side by side: about 50 ms, far from the 150 ms of their sum. A
        # loaded machine can delay a thread's start past its siblings' end, so judge the typical
        # request, not every one.
        assert (rows["recall_ms"] < rows["total"]).mean() > 0.9
        assert rows["recall_ms"].median() < 0.8 * rows["total"].median()
    else:
        assert (rows["recall_ms"] >= rows["total"]).all()
