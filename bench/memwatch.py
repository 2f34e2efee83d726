"""Peak resident memory per stage of one process, sampled from /proc (ru_maxrss only knows the
whole process's peak, never one stage's)."""
from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager
from typing import Iterator

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now; 0 for a process that has gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def peak_bytes() -> int:
    """This process's peak RSS so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemWatch:
    """Samples this process's RSS (and any `also` pids, e.g. Dask workers) every `every` seconds
    and keeps each stage's peak and wall time."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.stages: dict[str, dict[str, float]] = {}
        self.also: list[int] = []
        self._current: str | None = None
        self._peak = 0
        self._others = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._peak = max(self._peak, rss_bytes())
            if self.also:
                self._others = max(self._others, max(rss_bytes(p) for p in self.also))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._peak, self._others = rss_bytes(), 0
        t = time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - t
            self._peak = max(self._peak, rss_bytes())
            row = {"wall_s": round(wall, 2), "peak_rss_gb": round(self._peak / 2**30, 3)}
            if self.also:
                row["worker_peak_rss_gb"] = round(self._others / 2**30, 3)
            self.stages[name] = row
            print(f"{name}: {wall:.1f} s, peak {self._peak / 2**30:.2f} GB", flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
