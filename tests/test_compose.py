"""docker-compose.yml, read as data (no Docker engine here; `docker compose config` where the
plugin exists): every reclab service runs its deploy/bin entry script, the one the native team
stack runs (tests/e2e/test_team_stack.py), and waits for what it needs to be healthy."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"postgres", "prefect-server", "prefect-worker", "mlflow", "dashboard", "dask-scheduler",
            "dask-worker", "redis"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_runs_its_entry_script_which_the_native_stack_runs_too(tmp_path):
    from flows.stack import StackConfig
    from flows.team import services

    svc = compose()["services"]
    assert set(svc) == SERVICES
    native = {Path(s.cmd[-1]).name for s in services(StackConfig(tmp_path / "d", tmp_path / "s", team=True))}
    for name, spec in svc.items():
        cmd = spec.get("command") or spec.get("entrypoint")
        script = Path(cmd[0])
        assert script.parent.as_posix().endswith("deploy/bin"), (name, cmd)
        assert os.access(ROOT / "deploy" / "bin" / script.name, os.X_OK), script
        assert script.name in native, (name, script.name)
    assert native <= {Path((s.get("command") or s.get("entrypoint"))[0]).name for s in svc.values()}


def test_healthchecks_and_start_order():
    svc = compose()["services"]
    for name, spec in svc.items():
        assert spec["healthcheck"]["test"][0] == "CMD", name
        assert spec["restart"] == "unless-stopped", name
        for dep, cond in spec.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
            assert dep in svc
    needs = {"prefect-server": {"postgres"}, "mlflow": {"postgres"},
             "prefect-worker": {"prefect-server", "mlflow", "dask-scheduler", "redis"},
             "dask-worker": {"dask-scheduler", "mlflow", "redis"}}
    for name, deps in needs.items():
        assert deps <= set(svc[name]["depends_on"]), name
    assert svc["dask-worker"]["deploy"]["replicas"] >= 2
    for spec in svc.values():   # every healthcheck helper it names exists
        test = spec["healthcheck"]["test"]
        if test[1].startswith("deploy/"):
            assert (ROOT / test[1]).is_file()


def test_hosts_urls_and_one_data_volume():
    svc = compose()["services"]
    env = svc["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["DASK_SCHEDULER_ADDRESS"] == "tcp://dask-scheduler:8786"
    # MLflow must accept the Host header the workers send, and the browser's.
    assert "mlflow:5000" in svc["mlflow"]["environment"]["RECLAB_MLFLOW_ALLOWED_HOSTS"].split(",")
    # The UI in a browser calls the published port, not the compose network's name.
    assert "127.0.0.1:4200/api" in svc["prefect-server"]["environment"]["PREFECT_UI_API_URL"]
    # Redis serves the workers on compose's network: listening there, healthchecked by PING, not published.
    assert svc["redis"]["environment"]["RECLAB_REDIS_HOST"] == "0.0.0.0" and "ports" not in svc["redis"]
    assert svc["redis"]["healthcheck"]["test"][2] == f"redis://127.0.0.1:{svc['redis']['environment']['RECLAB_REDIS_PORT']}"
    reclab = [s for s in svc.values() if s.get("build") == "."]
    assert len(reclab) == len(svc) - 1
    for s in reclab:
        assert s["volumes"] == ["reclab-data:/data"] and s["environment"]["RECLAB_DATA_DIR"] == "/data"
    assert set(compose()["volumes"]) == {"reclab-data", "postgres-data"}


def test_images_are_pinned_and_published():
    for name, spec in compose()["services"].items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest") or spec.get("build") == ".", (name, image)
    assert compose()["services"]["postgres"]["image"] == "postgres:15-bookworm"
    assert "minio" not in (ROOT / "docker-compose.yml").read_text()


def test_ports_bind_localhost_only():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_no_committed_credentials():
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"^\s*([A-Z_]*(PASSWORD|AUTH_STRING|USERNAME|SECRET)[A-Z_]*):\s*(\S+)", text, re.MULTILINE):
        assert match.group(3).startswith("${") and ":?" in match.group(0), match.group(0)   # required, no default
    for script in (ROOT / "deploy" / "bin").iterdir():
        assert not re.search(r"PASSWORD:-|AUTH_STRING:-", script.read_text()), script


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    env = {**os.environ, **{k: "x" for k in ("POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD",
                                             "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")},
           "PREFECT_SERVER_API_AUTH_STRING": "admin:x"}
    out = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    missing = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                             capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if "PASSWORD" not in k})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_native_stack_binds_localhost_by_default():
    from flows.cli import _next_steps, parser

    assert parser().parse_args(["dashboard"]).address == "127.0.0.1"
    assert parser().parse_args(["up"]).host == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text()
    assert "mlflow ui" in makefile and "--host 127.0.0.1" in makefile
    assert "--host 127.0.0.1" in _next_steps(ROOT / "data")
    assert not re.search(r"0\.0\.0\.0", makefile)
