"""The stack as its users run it: `reclab up` on free ports, the campaign deployment triggered
through the Prefect API as the UI's Run button does, then MLflow's server, its registry and the
dashboard in headless Chromium; `reclab down` leaves no process behind."""
from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from flows.serve_deployments import FLOWS
from flows.stack import StackConfig, _alive, down, free_port, up
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, wait_final

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    cfg = StackConfig(data_dir=tmp / "data", state_dir=tmp / "state", prefect_port=free_port(),
                      mlflow_port=free_port(), dashboard_port=free_port())
    record = up(cfg, timeout=300)
    yield cfg
    down(cfg.state_dir)
    assert not any(_alive(pid) for pid in record["pids"].values()), "a stack process survived down"


@pytest.fixture(scope="module")
def campaign_run(stack):
    """Create a flow run of the `campaign/reclab` deployment, as the UI's Run button does."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = {"scenario": "tiny", "experiment": "default", "days": 2,
              "data_dir": str(stack.data_dir.resolve()), "name": "stack-e2e"}
    with temporary_settings({PREFECT_API_URL: stack.prefect_api}):
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("campaign/reclab")
            run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
            run = wait_final(client, run, 420)
    log = (stack.state_dir / "deployments.log").read_text()[-3000:]
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log}"
    return run


def test_daily_deployment_is_scheduled_but_paused(stack):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.prefect_api}):
        with get_client(sync_client=True) as client:
            daily = client.read_deployment_by_name("daily/reclab")
            others = [client.read_deployment_by_name(f"{f.name}/reclab") for f in FLOWS]
    assert daily.paused and daily.schedules
    assert not any(d.paused for d in others if d.name != "daily" and d.flow_id != daily.flow_id)
    campaign = next(d for d in others if d.parameter_openapi_schema["properties"].get("days"))
    assert campaign.parameter_openapi_schema["properties"]["days"]["type"] == "integer"


def _api(stack, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"{stack.prefect_api}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_campaign_runs_and_publishes_summaries(stack, campaign_run):
    artifacts = _api(stack, "/artifacts/filter", {"limit": 200, "sort": "KEY_ASC"})
    by_key = {a["key"]: a for a in artifacts if a.get("key")}
    assert {"ab-stack-e2e-day-1", "ab-stack-e2e-day-2"} <= set(by_key)
    assert "| treatment |" in by_key["ab-stack-e2e-day-2"]["data"]
    assert any(a["type"] == "progress" and a["data"] == 100.0 for a in artifacts)


def test_mlflow_server_lists_runs_and_registered_models(stack, campaign_run, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    exp = client.get_experiment_by_name("stack-e2e")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    names = {r.info.run_name for r in runs}
    assert {"campaign", "day-0", "day-1", "day-2", "day-2/train"} <= names
    assert all(r.info.status == "FINISHED" for r in runs)
    model = client.get_registered_model("reclab-stack-e2e")
    assert {"control", "treatment", "champion", "challenger"} <= set(model.aliases)
    champion = client.get_model_version_by_alias("reclab-stack-e2e", "champion")
    assert champion.tags["reclab.day"] == "2"
    # The fluent API exports its URI to the environment: keep it from outliving this test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_uri)
    mlflow.set_tracking_uri(stack.mlflow_uri)
    served = mlflow.pyfunc.load_model("models:/reclab-stack-e2e@champion")
    items = served.predict(pd.DataFrame({"user_id": [0, 1, 2], "arm": ["control", "treatment", "control"]}),
                           params={"lake": str(stack.data_dir.resolve() / "lake"), "day": 2})
    assert items.shape == (3, 10)
    # The catalogue on day 2: the scenario's first items and each later day's arrivals, as logged.
    from components.lake import Lake
    from sim.config import load_scenario

    tiny = load_scenario("tiny").items
    catalogue = tiny.n + 2 * tiny.new_per_day
    logged = Lake(stack.data_dir / "lake").read("items", [0, 1, 2]).column("item_id").to_pylist()
    assert sorted(logged) == list(range(catalogue))
    assert ((items >= 0) & (items < catalogue)).all()
    assert all(len(set(row)) == 10 for row in items.tolist())


def test_dashboard_in_chromium_shows_both_arms(stack, campaign_run):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(stack.dashboard_url, wait_until="domcontentloaded")
        page.get_by_text("CTR per arm per day").first.wait_for(timeout=90_000)
        control = page.get_by_text("control · day 2").first
        treatment = page.get_by_text("treatment · day 2").first
        control.wait_for(timeout=60_000)
        treatment.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the charts draw before the picture
        page.screenshot(path=str(ARTIFACTS / "stack-dashboard.png"), full_page=True)
        text = page.inner_text("body")
        browser.close()
    ctrs = [float(t) for t in re.findall(r"\b0\.\d{4}\b", text)]
    assert ctrs, "no CTR values on the page"


def test_printed_mlflow_link_opens_the_campaigns_runs_in_chromium(stack, campaign_run):
    """The link `reclab campaign` and `reclab up` print lands on the runs, not MLflow's GenAI view."""
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    from flows.tracking import ui_url

    exp = MlflowClient(tracking_uri=stack.mlflow_uri).get_experiment_by_name("stack-e2e")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(ui_url(stack.mlflow_uri, exp.experiment_id), wait_until="domcontentloaded")
        page.get_by_text("campaign", exact=True).first.wait_for(timeout=90_000)   # the top run, in the runs table
        url = page.url
        browser.close()
    assert f"/experiments/{exp.experiment_id}/runs" in url and "workflowType=machine_learning" in url
