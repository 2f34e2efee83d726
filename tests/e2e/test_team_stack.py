"""The team stack as a team runs it (`reclab up --team`): PostgreSQL behind Prefect and MLflow,
the campaign deployment triggered as the UI's Run button does, run by the work pool's worker,
its shards on two separate Dask worker processes, their features from the stack's Redis, MLflow's
runs and registry in PostgreSQL, the same tables as a local run of the seed (in-process features),
logins refused without credentials, and the two UIs in Chromium. `reclab down` leaves no process
behind, whatever failed."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flows.stack import StackConfig, _alive, down, free_port, up
from tests.e2e.browser import chromium_available, chromium_page, wait_final

# Starting eight services and a campaign through them is more than the suite's per-test default.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DAYS, SHARDS, NAME = 1, 2, "team-e2e"
# Wall-clock tables: the one thing two runs cannot repeat (online_store_daily: the Redis run's only).
MEASURED = ("request_latency", "latency_daily", "request_channel_latency", "channel_latency_daily",
            "online_store_daily")
CLIENT_ENV = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI",
              "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture(scope="module")
def team():
    # Not pytest's tmp_path: PostgreSQL runs as an unprivileged user, who must be able to enter it.
    tmp = Path(tempfile.mkdtemp(prefix="reclab-team-"))
    tmp.chmod(0o711)
    cfg = StackConfig(data_dir=tmp / "data", state_dir=tmp / "state", team=True,
                      prefect_port=free_port(), mlflow_port=free_port(), dashboard_port=free_port(),
                      postgres_port=free_port(), dask_port=free_port(), dask_dashboard_port=free_port(),
                      redis_port=free_port())
    before = {k: os.environ.get(k) for k in CLIENT_ENV}
    record = None
    try:
        record = up(cfg, timeout=300)
        from flows.team import credentials

        creds = credentials(cfg.state_dir)
        os.environ.update({"PREFECT_API_URL": cfg.prefect_api,
                           "PREFECT_API_AUTH_STRING": creds["PREFECT_SERVER_API_AUTH_STRING"],
                           "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
                           "MLFLOW_TRACKING_USERNAME": creds["MLFLOW_TRACKING_USERNAME"],
                           "MLFLOW_TRACKING_PASSWORD": creds["MLFLOW_TRACKING_PASSWORD"]})
        yield cfg, creds
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        down(cfg.state_dir)
        logs = ARTIFACTS / "team-stack-logs"   # what each service said, for a failure's reader
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in cfg.state_dir.glob("*.log"):
            shutil.copy(log, logs / log.name)
        if record is not None:
            assert not any(_alive(pid) for pid in record["pids"].values()), "a stack process survived down"
        shutil.rmtree(tmp, ignore_errors=True)


def _prefect_client(cfg: StackConfig, auth: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    class _Scope:
        def __enter__(self):
            self.settings = temporary_settings({PREFECT_API_URL: cfg.prefect_api, PREFECT_API_AUTH_STRING: auth})
            self.settings.__enter__()
            self.client = get_client(sync_client=True).__enter__()
            return self.client

        def __exit__(self, *exc):
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)
    return _Scope()


@pytest.fixture(scope="module")
def campaign_run(team):
    """A flow run of `campaign/reclab` created as the UI's Run button does, with scale=dask: the
    worker's DASK_SCHEDULER_ADDRESS sends the shards to the stack's scheduler; features served
    from the stack's Redis (the URL `reclab up --team` prints, in the form's online_store field)."""
    cfg, creds = team
    params = {"scenario": "tiny", "experiment": "default", "days": DAYS, "name": NAME,
              "scale": "dask", "shards": SHARDS, "online_store": cfg.redis_url}
    with _prefect_client(cfg, creds["PREFECT_SERVER_API_AUTH_STRING"]) as client:
        deployment = client.read_deployment_by_name("campaign/reclab")
        run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
        run = wait_final(client, run, 1200)
    log = (cfg.state_dir / "prefect-worker.log").read_text(errors="replace")[-4000:]
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{log}"
    return run, deployment


def _lake_digests(data_dir: Path) -> dict[str, str]:
    lake = data_dir / "lake"
    return {p.relative_to(lake).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(lake.rglob("*.parquet")) if p.relative_to(lake).parts[0] not in MEASURED}


def test_run_executes_on_the_worker_and_its_shards_on_both_dask_workers(team, campaign_run):
    cfg, _ = team
    run, _ = campaign_run
    worker_log = (cfg.state_dir / "prefect-worker.log").read_text(errors="replace")
    assert str(run.id) in worker_log   # the work pool's worker picked this run up
    # Each Dask worker process logs the Prefect task runs it executed: 2 shards x (DAYS + 1) days.
    ran = {}
    for i in (1, 2):
        text = (cfg.state_dir / f"dask-worker-{i}.log").read_text(errors="replace")
        ran[i] = re.findall(r"Task run '(serve_shard-[^']+)' - Finished in state Completed", text)
    assert len(ran[1]) + len(ran[2]) == SHARDS * (DAYS + 1), ran
    assert ran[1] and ran[2], f"a Dask worker ran no shard: {ran}"
    flow_log = worker_log + "".join(p.read_text(errors="replace") for p in cfg.state_dir.glob("*.log"))
    assert "LocalCluster" not in flow_log


def test_one_data_directory_and_tables_equal_a_local_run(team, campaign_run, tmp_path):
    cfg, _ = team
    data = cfg.data_dir
    assert (data / "campaign.json").is_file() and (data / "lake").is_dir()
    assert any((data / "mlartifacts").rglob("MLmodel")), "MLflow's artifacts are not in the data dir"
    # A model's environment is installable from an index: pinned libraries, our code inside it.
    reqs = next((data / "mlartifacts").rglob("requirements.txt")).read_text().split()
    assert reqs and all("==" in r for r in reqs) and not any(r.startswith("reclab") for r in reqs), reqs
    local = tmp_path / "local"
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV and k != "DASK_SCHEDULER_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "flows", "campaign", "--scenario", "tiny", "--experiment",
                          "default", "--days", str(DAYS), "--data-dir", str(local), "--name", NAME],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    want, got = _lake_digests(local), _lake_digests(data)
    assert set(got) == set(want)
    assert {k for k in want if got[k] != want[k]} == set()


def test_the_days_were_served_from_the_stacks_redis(team, campaign_run):
    import redis
    from mlflow.tracking import MlflowClient

    from components.features.online import LAYOUT, Keys
    from components.lake import Lake

    cfg, _ = team
    client = redis.Redis.from_url(cfg.redis_url)
    assert client.ping()
    lake = Lake(cfg.data_dir / "lake")
    keys = Keys.of(lake, DAYS)
    # The last day's features were synced there (yesterday's kept, older ones deleted)...
    assert client.get(keys.ready()).decode() == LAYOUT
    assert client.hlen(keys.users()) == lake.read("features_user", DAYS).num_rows > 0
    # ...and read back by the shards: the lake's counts of every day, and the server's own.
    rows = lake.read("online_store_daily", list(range(DAYS + 1))).to_pylist()
    assert [r["day"] for r in rows] == list(range(DAYS + 1))
    for r in rows:
        assert r["shards"] == SHARDS and r["hits"] + r["misses"] == r["lookups"] == lake.read("requests", r["day"]).num_rows
        assert r["round_trips"] > 0 and r["server_p99_ms"] >= r["server_p50_ms"] > 0
    assert client.info("commandstats")["cmdstat_hmget"]["calls"] >= sum(r["round_trips"] for r in rows)
    exp = MlflowClient(tracking_uri=cfg.mlflow_uri).get_experiment_by_name(NAME)
    runs = {r.info.run_name: r for r in MlflowClient(tracking_uri=cfg.mlflow_uri).search_runs([exp.experiment_id])}
    for name in (f"day-{DAYS}", f"day-{DAYS}/simulate"):   # the day's run and its serving stage's
        assert runs[name].data.metrics["online_store.hit_rate"] == pytest.approx(rows[-1]["hit_rate"]), name
        assert runs[name].data.metrics["online_store.lookups"] == rows[-1]["lookups"], name


def _pg(cfg: StackConfig, user: str, password: str | None, db: str):
    import psycopg2

    kw = {"password": password} if password is not None else {}
    return psycopg2.connect(host=cfg.host, port=cfg.postgres_port, user=user, dbname=db,
                            connect_timeout=5, **kw)


def test_mlflow_runs_and_registry_live_in_postgres(team, campaign_run):
    from mlflow.tracking import MlflowClient

    cfg, creds = team
    client = MlflowClient(tracking_uri=cfg.mlflow_uri)
    exp = client.get_experiment_by_name(NAME)
    api_runs = {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=500)}
    with _pg(cfg, "mlflow", creds["MLFLOW_DB_PASSWORD"], "mlflow") as con, con.cursor() as cur:
        cur.execute("SELECT run_uuid, name, status FROM runs WHERE experiment_id = %s", (int(exp.experiment_id),))
        rows = cur.fetchall()
        cur.execute("SELECT version FROM model_versions WHERE name = %s", (f"reclab-{NAME}",))
        versions = [v for (v,) in cur.fetchall()]
        cur.execute("SELECT alias FROM registered_model_aliases WHERE name = %s", (f"reclab-{NAME}",))
        aliases = {a for (a,) in cur.fetchall()}
    assert {r[0] for r in rows} == api_runs
    assert {"campaign", "day-0", "day-1"} <= {r[1] for r in rows}
    assert all(r[2] == "FINISHED" for r in rows)
    assert len(versions) == DAYS + 1        # one version per trained day (day 0 is served by the bootstrap)
    assert {"control", "treatment", "champion", "challenger"} <= aliases
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    by_name = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=500)}
    assert by_name["day-1"].data.tags["mlflow.parentRunId"] == by_name["campaign"].info.run_id
    assert by_name["day-1/train"].data.tags["mlflow.parentRunId"] == by_name["day-1"].info.run_id
    assert any(k.startswith("system/") for k in by_name["campaign"].data.metrics)


def test_nobody_gets_in_without_credentials(team, campaign_run):
    import psycopg2

    cfg, creds = team

    def status(url: str, body: dict | None = None, auth: str | None = None) -> int:
        req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    prefect = f"{cfg.prefect_api}/deployments/filter"
    assert status(prefect, {}) == 401
    assert status(prefect, {}, "admin:wrong") == 401
    assert status(prefect, {}, creds["PREFECT_SERVER_API_AUTH_STRING"]) == 200
    mlflow = f"{cfg.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=5"
    user = creds["MLFLOW_TRACKING_USERNAME"]
    assert status(mlflow) == 401
    assert status(mlflow, auth=f"{user}:wrong") == 401
    assert status(mlflow, auth=f"{user}:{creds['MLFLOW_TRACKING_PASSWORD']}") == 200
    for who, password, db in (("prefect", None, "prefect"), ("mlflow", "wrong", "mlflow"),
                              ("postgres", "", "postgres"),
                              ("prefect", creds["PREFECT_DB_PASSWORD"], "mlflow")):   # not its database
        with pytest.raises(psycopg2.OperationalError):
            _pg(cfg, who, password, db).close()


@pytest.mark.skipif(not chromium_available(), reason="Playwright or Debian chromium missing")
def test_prefect_run_form_and_mlflow_experiment_in_chromium(team, campaign_run):
    cfg, creds = team
    _, deployment = campaign_run
    ARTIFACTS.mkdir(exist_ok=True)
    prefect_ui = f"http://{cfg.host}:{cfg.prefect_port}"
    with chromium_page(1400, 1800) as page:
        page.goto(f"{prefect_ui}/dashboard", wait_until="domcontentloaded")
        page.get_by_text("Login").first.wait_for(timeout=90_000)   # the UI asks before it shows anything
        page.screenshot(path=str(ARTIFACTS / "team-prefect-login.png"))
        token = base64.b64encode(creds["PREFECT_SERVER_API_AUTH_STRING"].encode()).decode()
        page.evaluate(f"localStorage.setItem('prefect-password', '{token}')")
        page.goto(f"{prefect_ui}/deployments/deployment/{deployment.id}/run", wait_until="domcontentloaded")
        page.get_by_text("scenario").first.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "team-prefect-run-form.png"), full_page=True)
        form = page.inner_text("body")
    assert "a preset of configs/scenarios" in form and "dask" in form   # described, dropdown values
    from mlflow.tracking import MlflowClient

    from flows.tracking import ui_url

    exp = MlflowClient(tracking_uri=cfg.mlflow_uri).get_experiment_by_name(NAME)
    with chromium_page(1400, 1200, http_credentials={"username": creds["MLFLOW_TRACKING_USERNAME"],
                                                    "password": creds["MLFLOW_TRACKING_PASSWORD"]}) as page:
        # The link `reclab up` prints: MLflow 3.17 would open a new browser on its GenAI side.
        page.goto(ui_url(cfg.mlflow_uri, exp.experiment_id), wait_until="domcontentloaded")
        page.get_by_text("campaign", exact=True).first.wait_for(timeout=90_000)   # day runs nest under it
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "team-mlflow-experiment.png"), full_page=True)
        text = page.inner_text("body")
    assert "campaign" in text
