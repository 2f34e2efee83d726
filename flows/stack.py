"""`reclab up` / `reclab down`: the stack on this machine as native processes (no Docker).

`up` alone: Prefect server, the flow deployments served by one process, MLflow on sqlite, the
dashboard. `up --team` (flows/team.py): PostgreSQL behind Prefect and MLflow, a work pool and its
worker, a Dask scheduler and workers, Redis for the online feature store, every service through
its entry script in deploy/bin, the same scripts compose runs. `down` stops exactly what `up` recorded, in reverse order.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
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
    team: bool = False
    postgres_port: int = 5432
    dask_port: int = 8786
    dask_dashboard_port: int = 8787
    dask_workers: int = 2
    redis_port: int = 6379

    @property
    def prefect_api(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    @property
    def dask_address(self) -> str:
        return f"tcp://{self.host}:{self.dask_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    def ports(self) -> dict[str, int]:
        out = {"prefect": self.prefect_port, "mlflow": self.mlflow_port, "dashboard": self.dashboard_port}
        if self.team:
            out |= {"postgres": self.postgres_port, "dask-scheduler": self.dask_port,
                    "dask dashboard": self.dask_dashboard_port, "redis": self.redis_port}
        return out


@dataclass
class Service:
    """One process of the stack: its command, what it adds to the environment, and how to tell
    it is ready (a callable returning True once it is; None for nothing to wait on)."""
    name: str
    cmd: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    what: str = ""


class StackError(RuntimeError):
    """The stack could not start or stop; the message says which service and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def http_ok(url: str, auth: str | None = None) -> Callable[[], bool]:
    """Ready once `url` answers 200 (with HTTP basic auth `user:password` when given)."""
    def check() -> bool:
        req = urllib.request.Request(url)
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return check


def api_post(url: str, body: dict, auth: str | None = None) -> object:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def deployments_registered(cfg: StackConfig, auth: str | None = None) -> Callable[[], bool]:
    from flows.serve_deployments import FLOWS

    def check() -> bool:
        try:
            return len(api_post(f"{cfg.prefect_api}/deployments/filter", {}, auth)) >= len(FLOWS)
        except OSError:
            return False
    return check


def _services(cfg: StackConfig) -> list[Service]:
    if cfg.team:
        from flows.team import services

        return services(cfg)
    py = sys.executable
    data = cfg.data_dir.resolve()
    common = {"PREFECT_API_URL": cfg.prefect_api, "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
              "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RECLAB_DATA_DIR": str(data)}
    return [
        Service("prefect", [py, "-m", "prefect", "server", "start", "--host", cfg.host,
                            "--port", str(cfg.prefect_port)],
                {"PREFECT_HOME": str(cfg.state_dir.resolve() / "prefect"),
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""},
                http_ok(f"{cfg.prefect_api}/health")),
        Service("mlflow", [py, "-m", "mlflow", "server", "--host", cfg.host, "--port", str(cfg.mlflow_port),
                           "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
                           "--artifacts-destination", str(data / "mlartifacts"), "--workers", "1"],
                {"MLFLOW_TRACKING_URI": ""}, http_ok(f"{cfg.mlflow_uri}/health")),
        Service("deployments", [py, "-m", "flows.serve_deployments"], common,
                deployments_registered(cfg), "the flow deployments to register"),
        Service("dashboard", [py, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"),
                              "--server.address", cfg.host, "--server.port", str(cfg.dashboard_port),
                              "--server.headless", "true", "--browser.gatherUsageStats", "false",
                              "--", "--data-dir", str(data)],
                common, http_ok(f"{cfg.dashboard_url}/_stcore/health")),
    ]


def _wait(svc: Service, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise StackError(f"{svc.name} exited with code {proc.returncode} while starting"
                             f"{': ' + tail[0] if tail else ''}; see {log}")
        if svc.ready():
            return
        time.sleep(0.5)
    raise StackError(f"{svc.name}: {svc.what or 'no answer'} within {timeout:.0f} s; see {log}")


def up(cfg: StackConfig, timeout: float = 180.0) -> dict:
    """Start every service in its own process group, in order, each ready before the next;
    record pids and ports in the state dir. A failure stops what was started."""
    state = cfg.state_dir / STATE_FILE
    if state.exists():
        raise StackError(f"a stack is already recorded in {state}; run `reclab down` first")
    for name, port in cfg.ports().items():
        if _port_taken(cfg.host, port):
            raise StackError(f"port {port} for {name} on {cfg.host} is taken; choose another port")
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, int] = {}
    record = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "pids": started}
    try:
        for svc in _services(cfg):
            env = {**os.environ, **svc.env}
            env = {k: v for k, v in env.items() if v != ""}
            log = cfg.state_dir / f"{svc.name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(svc.cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            started[svc.name] = proc.pid
            state.write_text(json.dumps(record, indent=2))
            if svc.ready is not None:
                _wait(svc, proc, log, timeout)
    except BaseException:
        down(cfg.state_dir)
        raise
    return record


def down(state_dir: Path, grace: float = 15.0) -> list[str]:
    """Stop the process groups `up` recorded, last started first (the databases outlive their
    clients), politely then firmly; returns the names stopped."""
    state = state_dir / STATE_FILE
    if not state.exists():
        return []
    pids: dict[str, int] = json.loads(state.read_text())["pids"]
    for name, pid in reversed(pids.items()):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
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
