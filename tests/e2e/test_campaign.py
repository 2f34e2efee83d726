"""A tiny campaign through real Prefect (temporary server), MLflow (sqlite) and the dashboard."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from components.lake import Lake
from flows.campaign_state import open_campaign
from flows.tracking import registered_name

pytestmark = pytest.mark.e2e
AB_DAYS = 2
TABLES = ("items", "users", "requests", "request_latency", "impressions", "features_user", "features_item",
          "samples", "ab_daily", "latency_daily", "world_daily")
MEASURED = ("request_latency", "latency_daily")     # wall-clock time: the one thing a re-run cannot repeat


@pytest.fixture(scope="module")
def campaign_dir(prefect_server, tmp_path_factory) -> Path:
    from flows.campaign import campaign

    data_dir = tmp_path_factory.mktemp("campaign")
    campaign(scenario="tiny", experiment="default", days=AB_DAYS, data_dir=str(data_dir))
    return data_dir


def test_lake_holds_each_day_once(campaign_dir):
    lake = Lake(campaign_dir / "lake")
    for table in TABLES:  # the catalog too: each day publishes its arrivals, none after day 0 yet
        assert lake.days(table) == list(range(AB_DAYS + 1)), table
    leftovers = [p for p in (campaign_dir / "lake").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    con = lake.connect()
    assert con.execute("SELECT count(*) - count(DISTINCT request_id) FROM requests").fetchone()[0] == 0
    dup = con.execute("SELECT count(*) FROM (SELECT request_id, position FROM impressions "
                  "GROUP BY ALL HAVING count(*) > 1)").fetchone()[0]
    assert dup == 0


def test_arms_get_configured_traffic(campaign_dir):
    c = open_campaign(campaign_dir)
    con = c.lake.connect()
    rows = dict(con.sql("SELECT arm, count(DISTINCT user_id) FROM requests WHERE day >= 1 GROUP BY arm").fetchall())
    assert set(rows) == set(c.experiment.arms)
    n = sum(rows.values())
    share = c.experiment.arms[c.experiment.control].share / 100
    # Two-sided binomial test at 0.1 %: the split is what was configured, within sampling error.
    assert stats.binomtest(rows[c.experiment.control], n, share).pvalue > 0.001


def test_trained_pipelines_beat_random(campaign_dir):
    con = Lake(campaign_dir / "lake").connect()
    last = con.sql(f"SELECT a.arm, a.ctr_ci_low, w.ctr_random, w.ctr_expected FROM ab_daily a "
                   f"JOIN world_daily w USING (day, arm) WHERE day = {AB_DAYS}").fetchall()
    assert len(last) == 2
    for arm, ci_low, random_ctr, expected in last:
        assert expected > random_ctr * 1.2, arm     # the world's own expectation, noise-free
        assert ci_low > random_ctr, arm             # and the observed clicks, with their interval


def test_mlflow_holds_runs_with_params_metrics_models(campaign_dir):
    c = open_campaign(campaign_dir)
    client = MlflowClient(tracking_uri=c.tracking_uri)
    exp = client.get_experiment_by_name(c.name)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=500)
    by_name = {r.info.run_name: r for r in runs}
    expected = {"campaign"} | {f"day-{d}" for d in range(AB_DAYS + 1)} | {
        f"day-{d}/{s}" for d in range(AB_DAYS + 1) for s in ("simulate", "build_samples", "train", "report")}
    assert expected <= set(by_name)
    assert all(r.info.status == "FINISHED" for r in runs)
    parent = by_name["campaign"]
    assert parent.data.params["scenario.seed"] == str(c.scenario.seed)
    assert parent.data.params["experiment.arms.treatment.channels.itemcf"] == "100"
    assert by_name["day-1"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    train = by_name[f"day-{AB_DAYS}/train"]
    assert train.data.tags["mlflow.parentRunId"] == by_name[f"day-{AB_DAYS}"].info.run_id
    assert 0.5 < train.data.metrics["mlp.holdout_auc"] <= 1.0
    assert "models.mlp.hidden" in train.data.params
    version = client.get_model_version_by_alias(registered_name(c), "champion")
    assert version.run_id == train.info.run_id and version.tags["reclab.day"] == str(AB_DAYS)
    assert train.data.tags["reclab.model_version"] == str(version.version)
    for arm in ("control", "treatment"):
        assert f"{arm}.ctr" in by_name[f"day-{AB_DAYS}/report"].data.metrics


def test_dashboard_renders_both_arms(campaign_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RECLAB_DATA_DIR", str(campaign_dir))
    app = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120).run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert any(label.startswith("control") for label in labels)
    assert any(label.startswith("treatment") for label in labels)
    table = at.dataframe[0].value
    assert set(table["arm"]) == {"control", "treatment"}
    assert np.isfinite(table["ctr"]).all()


def test_rerunning_a_day_gives_the_same_bytes_and_metrics(campaign_dir):
    from flows.campaign import daily

    lake = Lake(campaign_dir / "lake")
    before = {t: lake.path(t, AB_DAYS).read_bytes() for t in TABLES}
    c = open_campaign(campaign_dir)
    client = MlflowClient(tracking_uri=c.tracking_uri)
    exp_id = client.get_experiment_by_name(c.name).experiment_id
    daily(data_dir=str(campaign_dir), day=AB_DAYS)
    for table in TABLES:
        assert lake.days(table) == list(range(AB_DAYS + 1)), table
        if table not in MEASURED:
            assert lake.path(table, AB_DAYS).read_bytes() == before[table], table
    assert lake.read("request_latency", AB_DAYS).num_rows == lake.read("requests", AB_DAYS).num_rows

    def metrics(run) -> dict[str, float]:
        return {k: v for k, v in run.data.metrics.items() if not k.endswith((".p50", ".p99"))}

    for stage in ("simulate", "build_samples", "train", "report"):
        runs = client.search_runs([exp_id], f"attributes.run_name = 'day-{AB_DAYS}/{stage}'")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), stage
        assert metrics(runs[0]) == metrics(runs[1]), stage
        assert metrics(runs[0]), stage
