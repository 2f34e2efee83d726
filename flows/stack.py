"""`reclab up` / `reclab down`: Prefect server, flow deployments, MLflow server and the dashboard
on localhost, as native processes (no Docker); `down` stops exactly what `up` started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    dashboard_port: int = 8501

    @property
    def prefect_api(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"


class StackError(RuntimeError):
    """The stack could not start or stop; the message says which service and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _services(cfg: StackConfig) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (command, extra environment, health URL or '' for none)."""
    py = sys.executable
    data = cfg.data_dir.resolve()
    common = {"PREFECT_API_URL": cfg.prefect_api, "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
              "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RECLAB_DATA_DIR": str(data)}
    return {
        "prefect": ([py, "-m", "prefect", "server", "start", "--host", cfg.host,
                     "--port", str(cfg.prefect_port)],
                    {"PREFECT_HOME": str(cfg.state_dir.resolve() / "prefect"),
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""},
                    f"{cfg.prefect_api}/health"),
        "mlflow": ([py, "-m", "mlflow", "server", "--host", cfg.host, "--port", str(cfg.mlflow_port),
                    "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
                    "--artifacts-destination", str(data / "mlartifacts"), "--workers", "1"],
                   {"MLFLOW_TRACKING_URI": ""}, f"{cfg.mlflow_uri}/health"),
        "deployments": ([py, "-m", "flows.serve_deployments"], common, ""),
        "dashboard": ([py, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"),
                       "--server.address", cfg.host, "--server.port", str(cfg.dashboard_port),
                       "--server.headless", "true", "--browser.gatherUsageStats", "false",
                       "--", "--data-dir", str(data)],
                      common, f"{cfg.dashboard_url}/_stcore/health"),
    }


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(name: str, url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode} while starting; see {log}")
        if _healthy(url):
            return
        time.sleep(0.5)
    raise StackError(f"{name} did not answer {url} within {timeout:.0f} s; see {log}")


def up(cfg: StackConfig, timeout: float = 180.0) -> dict:
    """Start every service in its own process group; record pids and ports in the state dir."""
    state = cfg.state_dir / STATE_FILE
    if state.exists():
        raise StackError(f"a stack is already recorded in {state}; run `reclab down` first")
    for name, port in (("prefect", cfg.prefect_port), ("mlflow", cfg.mlflow_port),
                       ("dashboard", cfg.dashboard_port)):
        if _port_taken(cfg.host, port):
            raise StackError(f"port {port} for {name} on {cfg.host} is taken; choose another port")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, int] = {}
    record = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "pids": started}
    try:
        for name, (cmd, extra, health) in _services(cfg).items():
            env = {**os.environ, **extra}
            env = {k: v for k, v in env.items() if v != ""}
            log = cfg.state_dir / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            started[name] = proc.pid
            state.write_text(json.dumps(record, indent=2))
            if health:
                _wait(name, health, proc, log, timeout)
        _wait_for_deployments(cfg, timeout)
    except BaseException:
        down(cfg.state_dir)
        raise
    return record


def _wait_for_deployments(cfg: StackConfig, timeout: float) -> None:
    from flows.serve_deployments import FLOWS

    deadline = time.monotonic() + timeout
    url = f"{cfg.prefect_api}/deployments/filter"
    while time.monotonic() < deadline:
        req = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if len(json.load(r)) >= len(FLOWS):
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise StackError(f"the flow deployments did not register within {timeout:.0f} s; "
                     f"see {cfg.state_dir / 'deployments.log'}")


def down(state_dir: Path, grace: float = 15.0) -> list[str]:
    """Stop the process groups `up` recorded, politely then firmly; returns the names stopped."""
    state = state_dir / STATE_FILE
    if not state.exists():
        return []
    pids: dict[str, int] = json.loads(state.read_text())["pids"]
    for pid in pids.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    survivors = [name for name, pid in pids.items() if _alive(pid)]
    if survivors:
        raise StackError(f"could not stop {survivors} (pids {[pids[n] for n in survivors]}); "
                         f"the record stays in {state}")
    state.unlink()
    return list(pids)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    """Whether any process of the group led by `pid` is still running (reaping our own child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
