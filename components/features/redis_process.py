"""A Redis server process its starter owns: Debian's redis-server, nothing persisted (the lake is
the truth: each day's tables are synced to it again). One command line, `command`, for both owners:
tests and benchmarks (`RedisServer`, a free port, stopped when the block ends) and the team stack
(`python -m components.features.redis_process`, what deploy/bin/redis runs natively and in compose,
which becomes the redis-server process itself)."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.typedconf import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError("redis-server is not installed (Debian: apt-get install redis-server)")
    return found


def command(port: int, folder: Path, host: str = "127.0.0.1", protected: bool = True) -> list[str]:
    """redis-server's command line: one port and address, its folder, no snapshot, no append log.
    `protected` False lets clients of other hosts in without a password (compose's own network)."""
    return [binary(), "--port", str(port), "--bind", host, "--dir", str(folder), "--save", "",
            "--appendonly", "no", "--protected-mode", "yes" if protected else "no"]


class RedisServer:
    def __init__(self, folder: Path, start_s: float = 10.0):
        self.folder, self.start_s = Path(folder), start_s
        self.proc_: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "RedisServer":
        cmd = command(free_port(), self.folder)
        self.port = int(cmd[2])
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "wb")
        self.proc_ = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        import redis

        deadline = time.monotonic() + self.start_s
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.proc_.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    tail = (self.folder / "redis.log").read_text(errors="replace").strip().splitlines()[-1:]
                    raise ConfigError(f"redis-server did not start on port {self.port}: {' '.join(tail)}") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.proc_ is not None and self.proc_.poll() is None:
            self.proc_.terminate()
            try:
                self.proc_.wait(5)
            except subprocess.TimeoutExpired:
                self.proc_.kill()
                self.proc_.wait()


def main(argv: list[str] | None = None) -> int:
    """Become the redis-server of `command` (exec: the same pid, so its owner stops it directly)."""
    p = argparse.ArgumentParser(prog="python -m components.features.redis_process", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=6379, help="port to listen on")
    p.add_argument("--dir", type=Path, required=True, help="the server's working folder (nothing is saved)")
    p.add_argument("--no-protected-mode", action="store_true",
                   help="accept clients of other hosts without a password (a private network only)")
    args = p.parse_args(argv)
    try:
        cmd = command(args.port, args.dir, args.host, not args.no_protected_mode)
    except ConfigError as exc:
        print(f"redis: {exc}", file=sys.stderr)
        return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
