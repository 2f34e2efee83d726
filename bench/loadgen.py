"""Open-loop load: Poisson arrivals at a target rate, fired at their times whatever the server does.

The arrival times are drawn up front from a seed (exponential gaps of mean 1 / rate); each request
is sent at its planned time on a pool of kept-alive HTTP connections (a new one opens whenever none
is idle, so a slow server never slows the arrivals down), and its latency runs from the planned
time to the last byte of the answer: queueing in the client, the network, the server's queue and
its batch all count, and no late request hides the lateness of those behind it (no coordinated
omission). Several client processes may share one arrival sequence (request i goes to process
i mod P) when one Python process could not keep up with the rate.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

BUDGET_MS = 100.0


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Seconds after the start of every arrival in [0, duration_s) of a Poisson process of `rate`/s."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError(f"poisson_arrivals: rate={rate} and duration_s={duration_s} must be positive")
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s + 6 * np.sqrt(rate * duration_s) + 10)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    while t[-1] < duration_s:   # never for the margin above, but the tail is not left to chance
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    return t[t < duration_s]


class _Pool:
    """Kept-alive connections to one host; a request takes an idle one or opens a new one."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.idle: list = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body)) + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await reader.readexactly(length)
        self.idle.append((reader, writer))
        return status, payload

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _fire(url: str, arrivals: np.ndarray, bodies: list[bytes], start_at: float,
                timeout_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> latency ms per request (nan when it failed or timed out), the monotonic time each ended and
    how late (ms) the client wrote it after its planned time: the client's own lag, to tell a load
    generator that cannot keep up from a server that cannot."""
    pool = _Pool(url)
    latency = np.full(len(arrivals), np.nan)
    ended = np.full(len(arrivals), np.nan)
    lag = np.full(len(arrivals), np.nan)

    async def one(i: int) -> None:
        lag[i] = (time.monotonic() - start_at - arrivals[i]) * 1e3
        try:
            status, _ = await pool.post("/recall", bodies[i])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            return
        now = time.monotonic()
        if status == 200:
            latency[i], ended[i] = (now - start_at - arrivals[i]) * 1e3, now

    tasks = []
    for i, t in enumerate(arrivals):
        delay = start_at + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    left = start_at + (arrivals[-1] if len(arrivals) else 0) + timeout_s - time.monotonic()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=max(left, 0.1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    pool.close()
    return latency, ended, lag


def _worker(url, arrivals, bodies, start_at, timeout_s):
    """One client process's share -> its _fire results and the CPU seconds the process spent on them."""
    cpu = time.process_time()
    out = asyncio.run(_fire(url, arrivals, bodies, start_at, timeout_s))
    return (*out, time.process_time() - cpu)


@dataclass(frozen=True)
class RateResult:
    rate: float              # target arrivals per second
    offered: float           # arrivals drawn / duration (the seeded draw's own rate)
    achieved: float          # answered requests / (last answer - start)
    requests: int
    failed: int              # errors and requests unanswered within the timeout
    p50_ms: float
    p99_ms: float
    send_lag_p99_ms: float = 0.0   # the client's lag behind the planned send times (its own backlog)
    client_cpu_pct: float = 0.0    # CPU of all client processes over the arrivals' span (100 = one core)

    @property
    def sustained(self) -> bool:
        """Answered everything, kept pace with the arrivals, and p99 within the budget."""
        return self.failed == 0 and self.achieved >= 0.95 * self.offered and self.p99_ms <= BUDGET_MS

    def row(self) -> dict:
        """JSON-ready: a latency that is not finite (unanswered requests past the 50th / 99th) is null."""
        finite = lambda x: x if np.isfinite(x) else None  # noqa: E731
        return {"rate": self.rate, "p50_ms": finite(self.p50_ms), "p99_ms": finite(self.p99_ms), "offered": self.offered,
                "achieved": self.achieved, "requests": self.requests, "failed": self.failed,
                "sustained": self.sustained, "send_lag_p99_ms": self.send_lag_p99_ms,
                "client_cpu_pct": self.client_cpu_pct}


def run_rate(url: str, rate: float, duration_s: float, make_body, seed: int, procs: int = 1,
             timeout_s: float = 5.0) -> RateResult:
    """Fire Poisson(rate) arrivals for duration_s at the server; make_body(i) -> request i's JSON bytes
    (built before the clock starts, so encoding never delays a send)."""
    arrivals = poisson_arrivals(rate, duration_s, seed)
    bodies = [make_body(i) for i in range(len(arrivals))]
    start_at = time.monotonic() + 0.3 + 0.2 * procs
    if procs <= 1:
        latency, ended, lag, cpu = _worker(url, arrivals, bodies, start_at, timeout_s)
    else:
        # fork: the client processes need only the bodies and the clock (CLOCK_MONOTONIC is system-wide).
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.starmap(_worker, [(url, arrivals[p::procs], bodies[p::procs], start_at, timeout_s)
                                           for p in range(procs)])
        latency, ended, lag = np.empty(len(arrivals)), np.empty(len(arrivals)), np.empty(len(arrivals))
        for p, (lat, end, late, _) in enumerate(parts):
            latency[p::procs], ended[p::procs], lag[p::procs] = lat, end, late
        cpu = sum(part[3] for part in parts)
    ok = ~np.isnan(latency)
    span = (np.nanmax(ended) - start_at) if ok.any() else float("inf")
    lat = np.where(ok, latency, np.inf)
    return RateResult(rate=rate, offered=round(len(arrivals) / duration_s, 1),
                      achieved=round(float(ok.sum() / span), 1), requests=len(arrivals), failed=int((~ok).sum()),
                      p50_ms=round(float(np.percentile(lat, 50, method="higher")), 2),
                      p99_ms=round(float(np.percentile(lat, 99, method="higher")), 2),
                      send_lag_p99_ms=round(float(np.nanpercentile(lag, 99)), 2) if (~np.isnan(lag)).any() else 0.0,
                      client_cpu_pct=round(float(100 * cpu / max(span, duration_s)), 1) if np.isfinite(span) else 0.0)


def recall_body(user: int, history, k: int | None = None) -> bytes:
    body = {"users": [int(user)], "histories": [np.asarray(history).tolist()]}
    return json.dumps(body if k is None else {**body, "k": k}).encode()
