"""The generative recall server: concurrent HTTP requests, batched in flight, one decode per batch.

A request (`POST /recall`, JSON `{"users": [u, ...], "histories": [[t, ...], ...], "k": K}`) puts its
rows in the batcher's queue and waits. The batcher's loop takes the oldest rows as soon as either
`max_batch` are waiting or the oldest has waited `max_wait_ms`, hands them to the backend as one
batch (on the one model thread, so the event loop keeps reading requests meanwhile: the next batch
fills while this one decodes), and answers every row with its top-K item ids and scores. `GET
/health` names the backend; `GET /stats` lists the batches decoded (size, oldest row's wait, decode
ms, and the device's ms of it where the backend times that, else null), `POST /stats/reset` clears them. HTTP/1.1 with keep-alive, parsed by an asyncio Protocol as
bytes arrive (per request: one header split, one orjson parse, one callback when its rows are
decoded, one orjson answer), on uvloop when it is installed: the event loop shares the GIL with the
model thread, so every microsecond it spends per request is also taken from the decode.

    python -m components.serving.genserver --backend fast --preset tiny --port 8700
    python -m components.serving.genserver --model data/models/day=3/generative --port 8700
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import orjson

from common.typedconf import ConfigError

MAX_BODY = 64 << 20
MAX_HEAD = 64 << 10


class BadRequest(ValueError):
    """A request the server answers with 400 and this one line."""


class _Request:
    """One POST /recall: its rows, answered together once every row is decoded (`reply` writes the
    HTTP answer): one object and one callback per request, not a future per row."""

    __slots__ = ("users", "histories", "k", "arrived", "taken", "left", "items", "scores", "reply")

    def __init__(self, users: list[int], histories: list[np.ndarray], k: int | None, reply: Callable):
        self.users, self.histories, self.k, self.reply = users, histories, k, reply
        self.arrived, self.taken, self.left = time.monotonic(), 0, len(users)
        self.items = self.scores = None

    def fill(self, lo: int, hi: int, items: np.ndarray, scores: np.ndarray) -> None:
        """Rows lo:hi of this request are items/scores (views of the batch's answer)."""
        if lo == 0 and hi == len(self.users):
            self.items, self.scores = items, scores
        else:   # split over batches: gathered into the request's own arrays
            if self.items is None:
                self.items = np.empty((len(self.users), items.shape[1]), items.dtype)
                self.scores = np.empty((len(self.users), scores.shape[1]), scores.dtype)
            self.items[lo:hi], self.scores[lo:hi] = items, scores
        self.left -= hi - lo
        if self.left == 0:
            k = self.items.shape[1] if self.k is None else self.k
            # float64 of the rounded float32: the same numbers json.dumps wrote from .tolist()
            self.reply(200, _dumps({"items": np.ascontiguousarray(self.items[:, :k]),
                                    "scores": self.scores[:, :k].round(6).astype(np.float64)}))


def _dumps(payload) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class Batcher:
    """Requests queue; the loop decodes up to max_batch rows once max_batch wait or the oldest has
    waited max_wait_ms (a request larger than what is left of a batch continues in the next one).
    `stats` keeps (rows, oldest row's wait ms, decode ms, device ms or None) per batch; device_ms
    reads the last decode's device time from the backend."""

    decode: Callable
    max_batch: int
    max_wait_ms: float
    executor: ThreadPoolExecutor
    stats: deque = field(default_factory=lambda: deque(maxlen=100_000))
    device_ms: Callable[[], float | None] = lambda: None

    def __post_init__(self):
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ConfigError(f"Batcher max_batch={self.max_batch}, max_wait_ms={self.max_wait_ms}: "
                              "need max_batch >= 1 and max_wait_ms >= 0")
        self._queue: deque[_Request] = deque()
        self._waiting = 0                      # rows queued and not yet taken
        self._arrived = asyncio.Event()

    def put(self, request: _Request) -> None:
        was_empty = not self._queue
        self._queue.append(request)
        self._waiting += request.left
        # Wake the loop only when it has something to do: a first row (it then sets its own timer for
        # max_wait) or a full batch, not once per request.
        if was_empty or self._waiting >= self.max_batch:
            self._arrived.set()

    def _take(self) -> tuple[list, list, list]:
        """The oldest rows, up to max_batch: (request, lo, hi) segments, their users and histories."""
        segments, users, histories, room = [], [], [], self.max_batch
        while self._queue and room:
            req = self._queue[0]
            lo = req.taken
            hi = min(len(req.users), lo + room)
            segments.append((req, lo, hi))
            users += req.users[lo:hi]
            histories += req.histories[lo:hi]
            req.taken, room = hi, room - (hi - lo)
            if hi == len(req.users):
                self._queue.popleft()
        self._waiting -= self.max_batch - room
        return segments, users, histories

    def _due(self) -> bool:
        return bool(self._queue) and (self._waiting >= self.max_batch or
                                      time.monotonic() >= self._queue[0].arrived + self.max_wait_ms / 1e3)

    async def _until_due(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        left = self._queue[0].arrived + self.max_wait_ms / 1e3 - time.monotonic()
        if self._waiting < self.max_batch and left > 0:
            self._arrived.clear()
            timer = loop.call_later(left, self._arrived.set)
            await self._arrived.wait()          # max_wait passed, or put() filled the batch
            timer.cancel()

    def _launch(self, loop) -> tuple:
        oldest = self._queue[0].arrived
        segments, users, histories = self._take()
        t0 = time.monotonic()
        return loop.run_in_executor(self.executor, self.decode, users, histories), segments, len(users), oldest, t0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pending = None
        while True:
            if pending is None:
                await self._until_due()
                pending = self._launch(loop)
            future, segments, rows, oldest, t0 = pending
            try:
                items, scores = await future
            except Exception as exc:   # the batch's requests get the error; the server keeps serving
                pending = self._launch(loop) if self._due() else None
                self._fail(segments, f"decode failed: {type(exc).__name__}: {exc}")
                continue
            gpu = self.device_ms()   # read before the next batch is launched: it is this batch's
            self.stats.append((rows, round((t0 - oldest) * 1e3, 3), round((time.monotonic() - t0) * 1e3, 3),
                               None if gpu is None else round(gpu, 3)))
            # The next batch goes to the model thread before this one is answered, so its decode
            # overlaps the answers' JSON and socket writes instead of waiting for them.
            pending = self._launch(loop) if self._due() else None
            at = 0
            for req, lo, hi in segments:
                if req.left > 0:
                    try:
                        req.fill(lo, hi, items[at: at + hi - lo], scores[at: at + hi - lo])
                    except Exception as exc:   # one bad answer must not stop the loop serving the rest
                        self._fail([(req, lo, hi)], f"answer failed: {type(exc).__name__}: {exc}")
                at += hi - lo

    def _fail(self, segments: list, message: str) -> None:
        """Answer these segments' requests with a 500 once, and forget the rows of theirs still queued."""
        error = _dumps({"error": message.splitlines()[0]})
        for req, _, _ in segments:
            if req.left < 0:
                continue
            req.left = -1          # answered: its later rows (if split) must not answer again
            if self._queue and self._queue[0] is req:
                self._queue.popleft()
                self._waiting -= len(req.users) - req.taken
            req.reply(500, error)


def _parse_recall(body: bytes, min_history: int) -> tuple[list[int], list[np.ndarray], int | None]:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
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


class _Http(asyncio.Protocol):
    """One HTTP/1.1 connection: requests parsed from the bytes as they arrive (no coroutine, no
    future per line), answered in order, one at a time; keep-alive unless the client asks to close."""

    def __init__(self, server: GenServer):
        self.server, self.buf, self.transport = server, bytearray(), None
        self.busy = self.parsing = self.close = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._open.add(self)

    def connection_lost(self, exc) -> None:
        self.server._open.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._next()

    def _next(self) -> None:
        self.parsing = True
        try:
            while not self.busy and self.transport is not None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._bad()
                    return
                lines = self.buf[:end].decode("latin-1").split("\r\n")
                parts, headers = lines[0].split(), {}
                for h in lines[1:]:
                    name, _, value = h.partition(":")
                    headers[name.strip().lower()] = value.strip()
                try:
                    length = int(headers.get("content-length", "0") or 0)
                except ValueError:
                    length = -1
                if len(parts) != 3 or not 0 <= length <= MAX_BODY:
                    return self._bad()
                if len(self.buf) < end + 4 + length:
                    return                                   # the body is still on its way
                body = bytes(self.buf[end + 4: end + 4 + length])
                del self.buf[: end + 4 + length]
                self.busy, self.close = True, headers.get("connection", "").lower() == "close"
                self.server.dispatch(parts[0], parts[1], body, self.reply)
        finally:
            self.parsing = False

    def _bad(self) -> None:
        self.busy, self.close = True, True
        self.reply(400, _dumps({"error": "malformed HTTP request line or Content-Length"}))

    def reply(self, status: int, out: bytes) -> None:
        if self.transport is None:
            return
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                             % (status, b"OK" if status == 200 else b"Error", len(out),
                                b"Connection: close\r\n" if self.close else b"") + out)
        if self.close:
            self.transport.close()
            self.transport = None
            return
        self.busy = False
        if not self.parsing and self.buf:   # a pipelined request waited for this answer
            self._next()


class GenServer:
    """The HTTP front of a Batcher over one backend."""

    def __init__(self, backend, max_batch: int, max_wait_ms: float):
        self.backend = backend
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self.batcher: Batcher | None = None
        self._open: set[_Http] = set()

    def dispatch(self, method: str, path: str, body: bytes, reply: Callable[[int, bytes], None]) -> None:
        if method == "POST" and path == "/recall":
            try:
                users, hists, k = _parse_recall(body, self.backend.min_history)
            except BadRequest as exc:
                return reply(400, _dumps({"error": str(exc)}))
            return self.batcher.put(_Request(users, hists, k, reply))
        if method == "GET" and path == "/health":
            return reply(200, _dumps({"backend": self.backend.name, "beam": self.backend.beam,
                                      "max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms,
                                      "event_loop": type(asyncio.get_running_loop()).__module__}))
        if method == "GET" and path == "/stats":
            return reply(200, _dumps({"batches": list(self.batcher.stats)}))
        if method == "POST" and path == "/stats/reset":
            self.batcher.stats.clear()
            return reply(200, _dumps({"ok": True}))
        reply(404, _dumps({"error": f"no route {method} {path}; try POST /recall, GET /health, GET /stats"}))

    async def serve(self, host: str, port: int, ready: Callable[[str], None], stop: asyncio.Event | None = None):
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.backend.warm)
        self.batcher = Batcher(self.backend.decode, self.max_batch, self.max_wait_ms, self.executor,
                               device_ms=lambda: getattr(self.backend, "device_ms", None))
        worker = asyncio.create_task(self.batcher.run())
        server = await loop.create_server(lambda: _Http(self), host, port, backlog=4096)
        ready(f"http://{host}:{server.sockets[0].getsockname()[1]}")
        async with server:
            await (stop.wait() if stop is not None else asyncio.Future())
            server.close()
            for conn in list(self._open):   # kept-alive connections would hold the shutdown open
                if conn.transport is not None:
                    conn.transport.close()
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


def _run(coro):
    """uvloop's event loop when it is installed (its transports are C, the standard one's Python), else
    asyncio's; GET /health names the one serving."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> None:
    from components.serving.genbuild import add_arguments, build_backend
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8700, help="0: any free port (the READY line names it)")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="Python's GIL switch interval (default 5): the event loop and the model thread share "
                         "the GIL, and the model thread takes it back after every torch call")
    add_arguments(ap)
    args = ap.parse_args(argv)
    if args.switch_interval_ms is not None:
        if args.switch_interval_ms <= 0:
            sys.exit(f"genserver: --switch-interval-ms must be positive, got {args.switch_interval_ms}")
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    try:
        backend = build_backend(args)
        server = GenServer(backend, args.max_batch, args.max_wait_ms)
        _run(server.serve(args.host, args.port, lambda url: print(f"READY {url}", flush=True)))
    except (ConfigError, OSError) as exc:
        sys.exit(f"genserver: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
