"""The team stack's Redis: started by its entry script (the one compose runs) before every process
that may serve from it, ready on PING, stopped by `down`; and `reclab up --team` prints its URL.
The whole stack with a campaign on it is tests/e2e/test_team_stack.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flows import stack
from flows.stack import StackConfig, _alive, down, free_port, up
from flows.team import services

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0,
                                reason="redis-server is not installed")


def _cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(tmp_path / "data", tmp_path / "state", team=True, redis_port=free_port())


def test_redis_starts_before_its_clients_on_the_configured_port(tmp_path, monkeypatch):
    monkeypatch.setenv("RECLAB_CREDENTIALS", str(tmp_path / "creds.env"))
    cfg = _cfg(tmp_path)
    names = [s.name for s in services(cfg)]
    assert names.index("redis") < min(names.index("dask-worker-1"), names.index("prefect-worker"))
    redis = next(s for s in services(cfg) if s.name == "redis")
    assert redis.cmd[-1] == str(ROOT / "deploy" / "bin" / "redis")
    assert redis.env["RECLAB_REDIS_PORT"] == str(cfg.redis_port) and cfg.ports()["redis"] == cfg.redis_port
    assert cfg.redis_url == f"redis://127.0.0.1:{cfg.redis_port}/0"


def test_up_starts_the_script_which_answers_ping_and_down_stops_it(tmp_path, monkeypatch):
    import redis

    monkeypatch.setenv("RECLAB_CREDENTIALS", str(tmp_path / "creds.env"))
    cfg = _cfg(tmp_path)
    only = [s for s in services(cfg) if s.name == "redis"]
    monkeypatch.setattr(stack, "_services", lambda _: only)
    record = up(cfg, timeout=30)
    try:
        assert redis.Redis.from_url(cfg.redis_url).ping()
        health = subprocess.run([str(ROOT / "deploy" / "bin" / "healthcheck"), f"redis://127.0.0.1:{cfg.redis_port}"])
        assert health.returncode == 0                                   # compose's healthcheck, the same PING
        # The script became redis-server itself: the pid `down` stops is the server's.
        assert "redis-server" in Path(f"/proc/{record['pids']['redis']}/cmdline").read_bytes().decode()
    finally:
        assert down(cfg.state_dir) == ["redis"]
    assert not _alive(record["pids"]["redis"])
    dead = subprocess.run([str(ROOT / "deploy" / "bin" / "healthcheck"), f"redis://127.0.0.1:{cfg.redis_port}"])
    assert dead.returncode == 1


def test_up_team_prints_the_redis_url(tmp_path, monkeypatch, capsys):
    from flows import cli

    monkeypatch.setenv("RECLAB_REDIS_PORT", "6390")
    monkeypatch.setenv("RECLAB_CREDENTIALS", str(tmp_path / "creds.env"))
    monkeypatch.setattr(stack, "up", lambda cfg: {"pids": {"redis": 1}})
    args = cli.parser().parse_args(["up", "--team", "--data-dir", str(tmp_path / "d"), "--state-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Redis:       redis://127.0.0.1:6390/0" in out and "starting PostgreSQL, Redis," in out
