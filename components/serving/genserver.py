"""The generative recall server: concurrent HTTP requests, batched in flight, one decode per batch.

A request (`POST /recall`, JSON `{"users": [u, ...], "histories": [[t, ...], ...], "k": K}`) puts its
rows in the batcher's queue and waits. The batcher's loop takes the oldest rows as soon as either
`max_batch` are waiting or the oldest has waited `max_wait_ms`, hands them to the backend as one
batch (on the one model thread, so the event loop keeps reading requests meanwhile: the next batch
fills while this one decodes), and answers every row with its top-K item ids and scores. `GET
/health` names the backend; `GET /stats` lists the batches decoded (size, oldest row's wait, decode
ms), `POST /stats/reset` clears them. HTTP/1.1 with keep-alive over asyncio streams: the standard
library only, so the server runs wherever torch does.

    python -m components.serving.genserver --backend fast --preset tiny --port 8700
    python -m components.serving.genserver --model data/models/day=3/generative --port 8700
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from common.typedconf import ConfigError

MAX_BODY = 64 << 20


class BadRequest(ValueError):
    """A request the server answers with 400 and this one line."""


@dataclass
class _Row:
    user: int
    history: np.ndarray
    arrived: float
    future: asyncio.Future


@dataclass
class Batcher:
    """Rows queue; the loop decodes up to max_batch of them once max_batch wait or the oldest has
    waited max_wait_ms. `stats` keeps (rows, oldest row's wait ms, decode ms) per batch."""

    decode: Callable
    max_batch: int
    max_wait_ms: float
    executor: ThreadPoolExecutor
    stats: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def __post_init__(self):
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ConfigError(f"Batcher max_batch={self.max_batch}, max_wait_ms={self.max_wait_ms}: "
                              "need max_batch >= 1 and max_wait_ms >= 0")
        self._queue: deque[_Row] = deque()
        self._arrived = asyncio.Event()

    async def submit(self, users: list[int], histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        loop, now = asyncio.get_running_loop(), time.monotonic()
        rows = [_Row(u, h, now, loop.create_future()) for u, h in zip(users, histories)]
        self._queue.extend(rows)
        self._arrived.set()
        done = await asyncio.gather(*(r.future for r in rows))
        return np.stack([d[0] for d in done]), np.stack([d[1] for d in done])

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._queue[0].arrived + self.max_wait_ms / 1e3
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            t0 = time.monotonic()
            try:
                items, scores = await loop.run_in_executor(
                    self.executor, self.decode, [r.user for r in batch], [r.history for r in batch])
            except Exception as exc:   # the batch's requests get the error; the server keeps serving
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            self.stats.append((len(batch), round((t0 - batch[0].arrived) * 1e3, 3),
                               round((time.monotonic() - t0) * 1e3, 3)))
            for i, r in enumerate(batch):
                if not r.future.done():
                    r.future.set_result((items[i], scores[i]))


def _parse_recall(body: bytes, min_history: int) -> tuple[list[int], list[np.ndarray], int | None]:
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(req, dict) or set(req) - {"users", "histories", "k"} or "histories" not in req:
        raise BadRequest('expected {"users": [int], "histories": [[int]], "k": int}, unknown keys rejected')
    hists, users, k = req["histories"], req.get("users"), req.get("k")
    users = list(range(len(hists))) if users is None else users
    if not isinstance(hists, list) or not isinstance(users, list) or len(users) != len(hists) or not hists:
        raise BadRequest("histories must be a non-empty list with one user per history")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise BadRequest(f"k must be a positive integer, got {k!r}")
    try:
        arrays = [np.asarray(h, np.int64) for h in hists]
        users = [int(u) for u in users]
    except (TypeError, ValueError, OverflowError):
        raise BadRequest("users and histories must hold integers") from None
    if any(a.ndim != 1 or len(a) < min_history for a in arrays):
        raise BadRequest(f"every history must be a list of at least {min_history} integers")
    return users, arrays, k


class GenServer:
    """The HTTP front of a Batcher over one backend."""

    def __init__(self, backend, max_batch: int, max_wait_ms: float):
        self.backend = backend
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self.batcher: Batcher | None = None
        self._open: set[asyncio.Task] = set()

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if method == "POST" and path == "/recall":
            users, hists, k = _parse_recall(body, self.backend.min_history)
            try:
                items, scores = await self.batcher.submit(users, hists)
            except Exception as exc:
                return 500, {"error": f"decode failed: {type(exc).__name__}: {exc}".splitlines()[0]}
            k = items.shape[1] if k is None else k
            return 200, {"items": items[:, :k].tolist(), "scores": scores[:, :k].round(6).tolist()}
        if method == "GET" and path == "/health":
            return 200, {"backend": self.backend.name, "beam": self.backend.beam, "max_batch": self.max_batch,
                         "max_wait_ms": self.max_wait_ms}
        if method == "GET" and path == "/stats":
            return 200, {"batches": list(self.batcher.stats)}
        if method == "POST" and path == "/stats/reset":
            self.batcher.stats.clear()
            return 200, {"ok": True}
        return 404, {"error": f"no route {method} {path}; try POST /recall, GET /health, GET /stats"}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._open.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                parts = line.decode("latin-1").split()
                length = int(headers.get("content-length", "0") or 0)
                if len(parts) != 3 or not 0 <= length <= MAX_BODY:
                    status, payload = 400, {"error": "malformed HTTP request line or Content-Length"}
                    body, close = b"", True
                else:
                    body = await reader.readexactly(length)
                    close = headers.get("connection", "").lower() == "close"
                    try:
                        status, payload = await self._route(parts[0], parts[1], body)
                    except BadRequest as exc:
                        status, payload = 400, {"error": str(exc)}
                out = json.dumps(payload).encode()
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                             % (status, b"OK" if status == 200 else b"Error", len(out),
                                b"Connection: close\r\n" if close else b"") + out)
                await writer.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(task)
            writer.close()

    async def serve(self, host: str, port: int, ready: Callable[[str], None], stop: asyncio.Event | None = None):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.backend.warm)
        self.batcher = Batcher(self.backend.decode, self.max_batch, self.max_wait_ms, self.executor)
        worker = asyncio.create_task(self.batcher.run())
        server = await asyncio.start_server(self._connection, host, port, backlog=4096)
        ready(f"http://{host}:{server.sockets[0].getsockname()[1]}")
        async with server:
            await (stop.wait() if stop is not None else asyncio.Future())
            server.close()
            for task in list(self._open):   # kept-alive connections would hold the shutdown open
                task.cancel()
            await asyncio.gather(*self._open, return_exceptions=True)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
        """Serve from a daemon thread (tests, notebooks): -> (url, stop)."""
        got: dict = {}
        up = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def main():
            asyncio.set_event_loop(loop)

            def ready(url):
                got["url"] = url
                up.set()
            try:
                loop.run_until_complete(self.serve(host, port, ready, stop))
            except Exception as exc:
                got["error"] = exc
                up.set()
        thread = threading.Thread(target=main, daemon=True, name="genserver")
        thread.start()
        up.wait()
        if "error" in got:
            raise got["error"]

        def shutdown():
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
        return got["url"], shutdown


def main(argv: list[str] | None = None) -> None:
    from components.serving.genbuild import add_arguments, build_backend
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8700, help="0: any free port (the READY line names it)")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        backend = build_backend(args)
        server = GenServer(backend, args.max_batch, args.max_wait_ms)
        asyncio.run(server.serve(args.host, args.port, lambda url: print(f"READY {url}", flush=True)))
    except (ConfigError, OSError) as exc:
        sys.exit(f"genserver: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
