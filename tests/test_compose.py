"""docker-compose.yml cannot run here (no Docker engine), so it is validated as data."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"postgres", "minio", "prefect-server", "prefect-worker", "mlflow", "streamlit",
            "dask-scheduler", "dask-worker"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_all_services_present_and_built_from_this_repo():
    services = compose()["services"]
    assert SERVICES <= set(services)
    assert (ROOT / "Dockerfile").is_file()
    for name in ("prefect-server", "prefect-worker", "mlflow", "streamlit", "dask-scheduler", "dask-worker"):
        assert services[name]["build"] == ".", name


def test_ports_bind_localhost_only():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_environment_matches_native_stack_names():
    env = compose()["services"]["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"].endswith(":4200/api")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_no_committed_secrets_beyond_dev_defaults():
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"^\s*[A-Z_]*(PASSWORD|SECRET)[A-Z_]*:\s*(\S+)", text, re.MULTILINE):
        assert match.group(2).startswith("${"), match.group(0)   # taken from the environment
    for default in re.findall(r"PASSWORD:-([^}]*)", text):
        assert default.endswith("dev-only"), default


def test_service_commands_exist():
    services = compose()["services"]
    assert (ROOT / "flows" / "serve_deployments.py").is_file()
    assert services["prefect-worker"]["command"] == "python -m flows.serve_deployments"
    assert services["streamlit"]["command"].startswith("reclab dashboard")
    init = services["postgres"]["volumes"][1].split(":")[0]
    assert (ROOT / init).is_file()


def test_native_stack_binds_localhost_by_default():
    from flows.cli import _next_steps, parser

    assert parser().parse_args(["dashboard"]).address == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text()
    assert "mlflow ui" in makefile and "--host 127.0.0.1" in makefile
    assert "--host 127.0.0.1" in _next_steps(ROOT / "data")
    assert not re.search(r"0\.0\.0\.0", makefile)
