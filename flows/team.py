"""The team stack's services (`reclab up --team`): each one's entry script in deploy/bin (the
commands compose runs too), its environment, and when it counts as ready; and the credentials.

Credentials come from the environment; any that is not set is taken from the credentials file
(RECLAB_CREDENTIALS, default <state dir>/credentials.env, owner-only, never committed), and any
still missing is generated there once. The same file works as compose's `--env-file`.
"""
from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from flows.stack import REPO, Service, StackConfig, deployments_registered, http_ok

BIN = REPO / "deploy" / "bin"
SECRETS = ("POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD",
           "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
           "MLFLOW_FLASK_SERVER_SECRET_KEY")


def credentials_file(state_dir: Path) -> Path:
    return Path(os.environ.get("RECLAB_CREDENTIALS") or state_dir / "credentials.env")


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                out[key.strip()] = value.strip()
    return out


def credentials(state_dir: Path) -> dict[str, str]:
    """Every secret of the stack: environment first, then the file; the missing ones generated
    (hex, so they need no quoting in a URL or an ini file) and saved to the file."""
    path = credentials_file(state_dir)
    stored = _read_env_file(path)
    generated = {"POSTGRES_PASSWORD": secrets.token_hex(16), "PREFECT_DB_PASSWORD": secrets.token_hex(16),
                 "MLFLOW_DB_PASSWORD": secrets.token_hex(16),
                 "PREFECT_SERVER_API_AUTH_STRING": f"admin:{secrets.token_hex(16)}",
                 "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(16),
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
    kept = {k: stored.get(k) or generated[k] for k in SECRETS}
    if any(k not in stored for k in SECRETS if not os.environ.get(k)):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# reclab team stack credentials: keep this file private, never commit it\n")
            # A secret the environment gives is not written down; the file keeps the others.
            f.writelines(f"{k}={v}\n" for k, v in kept.items() if not os.environ.get(k) or k in stored)
    return {k: os.environ.get(k) or kept[k] for k in SECRETS}


def postgres_ready(cfg: StackConfig, password: str):
    def check() -> bool:
        import psycopg2

        try:
            psycopg2.connect(host=cfg.host, port=cfg.postgres_port, user="prefect", password=password,
                             dbname="prefect", connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False
    return check


def redis_answers(cfg: StackConfig):
    """Ready once the server answers PING."""
    def check() -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=2).ping())
        except (redis.exceptions.RedisError, OSError):
            return False
    return check


def dask_workers_at_least(cfg: StackConfig, n: int):
    """Ready once the scheduler itself counts `n` workers (a worker is only useful once joined)."""
    import json
    import urllib.request

    def check() -> bool:
        url = f"http://{cfg.host}:{cfg.dask_dashboard_port}/json/counts.json"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.load(r).get("workers", 0) >= n
        except (OSError, ValueError):
            return False
    return check


def worker_online(cfg: StackConfig, auth: str, pool: str):
    from flows.stack import api_post

    registered = deployments_registered(cfg, auth)

    def check() -> bool:
        try:
            workers = api_post(f"{cfg.prefect_api}/work_pools/{pool}/workers/filter", {}, auth)
        except OSError:
            return False
        return any(w.get("status") == "ONLINE" for w in workers) and registered()
    return check


def services(cfg: StackConfig) -> list[Service]:
    creds = credentials(cfg.state_dir)
    state = cfg.state_dir.resolve()
    auth = creds["PREFECT_SERVER_API_AUTH_STRING"]
    pool = os.environ.get("RECLAB_WORK_POOL", "reclab")
    bin_dir = str(Path(sys.executable).parent)
    env = {**creds, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "RECLAB_DATA_DIR": str(cfg.data_dir.resolve()), "RECLAB_STATE_DIR": str(state),
           "RECLAB_PG_HOST": cfg.host, "RECLAB_PG_PORT": str(cfg.postgres_port),
           "PREFECT_HOME": str(state / "prefect"), "PREFECT_API_URL": cfg.prefect_api,
           "PREFECT_API_AUTH_STRING": auth, "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
           "DASK_SCHEDULER_ADDRESS": cfg.dask_address, "RECLAB_WORK_POOL": pool,
           "RECLAB_PREFECT_HOST": cfg.host, "RECLAB_PREFECT_PORT": str(cfg.prefect_port),
           "RECLAB_MLFLOW_HOST": cfg.host, "RECLAB_MLFLOW_PORT": str(cfg.mlflow_port),
           "RECLAB_DASK_HOST": cfg.host, "RECLAB_DASK_PORT": str(cfg.dask_port),
           "RECLAB_DASK_DASHBOARD": f"{cfg.host}:{cfg.dask_dashboard_port}",
           "RECLAB_DASHBOARD_HOST": cfg.host, "RECLAB_DASHBOARD_PORT": str(cfg.dashboard_port),
           "RECLAB_REDIS_HOST": cfg.host, "RECLAB_REDIS_PORT": str(cfg.redis_port),
           "RECLAB_REDIS_DIR": str(state / "redis")}

    def script(name: str) -> list[str]:
        return ["bash", str(BIN / name)]

    out = [
        Service("postgres", script("postgres"), {**env, "PGDATA": str(state / "pgdata")},
                postgres_ready(cfg, creds["PREFECT_DB_PASSWORD"]), "PostgreSQL took no login"),
        # The online feature store's server, before every process that may serve from it.
        Service("redis", script("redis"), env, redis_answers(cfg), f"no PONG from {cfg.redis_url}"),
        Service("prefect-server", script("prefect-server"), env,
                http_ok(f"{cfg.prefect_api}/health"), "no answer on /api/health"),
        Service("mlflow", script("mlflow"), env, http_ok(f"{cfg.mlflow_uri}/health"),
                "no answer on /health"),
        Service("dask-scheduler", script("dask-scheduler"), env,
                http_ok(f"http://{cfg.host}:{cfg.dask_dashboard_port}/health"), "no answer on /health"),
    ]
    for i in range(1, cfg.dask_workers + 1):
        out.append(Service(f"dask-worker-{i}", script("dask-worker"),
                           {**env, "RECLAB_DASK_WORKER_NAME": f"dask-worker-{i}"},
                           dask_workers_at_least(cfg, i), f"the scheduler did not see {i} workers"))
    out += [
        Service("prefect-worker", script("prefect-worker"), env, worker_online(cfg, auth, pool),
                f"no ONLINE worker in work pool {pool} with every deployment registered"),
        Service("dashboard", script("dashboard"), env, http_ok(f"{cfg.dashboard_url}/_stcore/health"),
                "no answer on /_stcore/health"),
    ]
    return out
