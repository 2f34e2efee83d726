"""A Redis server process the caller owns (tests, benchmarks): Debian's redis-server on a free
port, in its own folder, nothing persisted; stopped when the block ends."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from common.typedconf import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, start_s: float = 10.0):
        self.folder, self.start_s = Path(folder), start_s
        self.proc_: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = open(self.folder / "redis.log", "wb")
        self.proc_ = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                       str(self.folder), "--save", "", "--appendonly", "no"],
                                      stdout=log, stderr=subprocess.STDOUT)
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
