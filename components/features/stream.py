"""Real-time features as a stream processor computes them: events arrive micro-batch by
micro-batch, and a micro-batch's events become visible when it closes.

The offline twin is `columns.stream_sql`: for a request at ts t, the micro-batches closed before
t's own one began, within the last REALTIME_BATCHES of them. Serving closes micro-batch m before
serving any request of micro-batch m + 1, so both sides count exactly the same events. Item
counts (`ItemStream`, twin `columns.item_stream_sql`) follow the same rule over every shard's events.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from common.typedconf import ConfigError
from components.features.columns import MICRO_BATCH_SECONDS, REALTIME_BATCHES, columns_of
from components.lake import Lake


class StreamProcessor:
    """Per micro-batch, per user: impressions and clicks; lookups sum the closed ones in the window."""

    def __init__(self, micro_batch_seconds: int = MICRO_BATCH_SECONDS, window_batches: int = REALTIME_BATCHES):
        self.micro_batch_seconds = micro_batch_seconds
        self.window_batches = window_batches
        self.columns = columns_of("stream")
        self.pending_: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.closed_: dict[int, dict[int, np.ndarray]] = {}   # micro-batch -> user -> [impressions, clicks]

    @classmethod
    def for_day(cls, lake: Lake, day: int, seconds_per_day: int = 86_400) -> "StreamProcessor":
        """A processor at the start of `day`, having seen the previous day's last window of events."""
        proc = cls()
        start = day * seconds_per_day
        if day > 0 and lake.has("impressions", day - 1):
            with lake.connect() as con:
                ev = con.sql(f"SELECT user_id, ts, clicked FROM impressions WHERE day = {day - 1} "
                             f"AND ts >= {start - proc.window_batches * proc.micro_batch_seconds}").fetchnumpy()
            proc.ingest(ev["user_id"], ev["ts"], ev["clicked"])
        proc.close_until(start)
        return proc

    def ingest(self, user_ids: np.ndarray, ts: np.ndarray, clicked: np.ndarray) -> None:
        """Impression events [E] (one per shown item) join their micro-batch, not yet visible."""
        self.pending_.append((np.asarray(user_ids, np.int64), np.asarray(ts, np.int64), np.asarray(clicked, bool)))

    def close_until(self, ts: int) -> None:
        """Close every micro-batch that ended at or before `ts`: its events become visible."""
        if not self.pending_:
            return
        users, times, clicks = (np.concatenate(a) for a in zip(*self.pending_))
        batch = times // self.micro_batch_seconds
        done = (batch + 1) * self.micro_batch_seconds <= ts
        self.pending_ = [(users[~done], times[~done], clicks[~done])] if (~done).any() else []
        for b in np.unique(batch[done]):
            m = done & (batch == b)
            ids, inv = np.unique(users[m], return_inverse=True)
            counts = np.stack([np.bincount(inv, minlength=len(ids)),
                               np.bincount(inv, weights=clicks[m], minlength=len(ids)).astype(np.int64)], 1)
            slot = self.closed_.setdefault(int(b), {})
            for u, row in zip(ids.tolist(), counts):
                slot[u] = slot.get(u, 0) + row
        oldest = ts // self.micro_batch_seconds - self.window_batches
        self.closed_ = {b: v for b, v in self.closed_.items() if b >= oldest}

    def lookup(self, user_ids: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
        """The stream columns of requests (user [B], ts [B]): closed micro-batches in the window."""
        out = np.zeros((len(user_ids), 2), np.int64)                                   # [B, (impr, clicks)]
        now = np.asarray(ts, np.int64) // self.micro_batch_seconds
        for i, (u, m) in enumerate(zip(np.asarray(user_ids).tolist(), now.tolist())):
            for b in range(m - self.window_batches, m):
                row = self.closed_.get(b, {}).get(u)
                if row is not None:
                    out[i] += row
        return {c.name: out[:, int(c.producer.clicks)] for c in self.columns}


class ShardWaitError(ConfigError):
    """A shard waited too long for the others' events of a micro-batch; one line, naming them."""


class Bus(Protocol):
    """Where the shards of a day meet: each puts its events of every micro-batch, each gathers
    every shard's part of a micro-batch before it serves the next one."""

    n_shards: int

    def put(self, micro_batch: int, shard: int, payload: bytes) -> None: ...

    def gather(self, micro_batch: int) -> list[bytes]: ...


class MemoryBus:
    """One shard: its own parts, in this process; nothing to wait for."""

    n_shards = 1

    def __init__(self) -> None:
        self.parts_: dict[int, bytes] = {}

    def put(self, micro_batch: int, shard: int, payload: bytes) -> None:
        self.parts_[micro_batch] = payload

    def gather(self, micro_batch: int) -> list[bytes]:
        return [self.parts_[micro_batch]]


def wait_for(get: Callable[[], list[bytes | None]], what: str, wait_s: float) -> list[bytes]:
    """Poll `get` until no part is missing; the shards serve side by side, so a missing part is
    another shard still serving that micro-batch, or one that never started (too few task slots)."""
    deadline, pause = time.monotonic() + wait_s, 0.001
    while True:
        parts = get()
        missing = [i for i, p in enumerate(parts) if p is None]
        if not missing:
            return parts
        if time.monotonic() > deadline:
            raise ShardWaitError(f"{what}: shards {missing} gave no events within {wait_s:g} s; every shard "
                                 f"of a day must run at the same time (give the task runner a slot per shard)")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class FileBus:
    """Shards of one machine or of workers sharing the data directory: one file per part."""

    def __init__(self, folder: Path, n_shards: int, wait_s: float):
        self.folder, self.n_shards, self.wait_s = folder, n_shards, wait_s
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, micro_batch: int, shard: int) -> Path:
        return self.folder / f"mb-{micro_batch}-shard-{shard}-of-{self.n_shards}.bin"

    def put(self, micro_batch: int, shard: int, payload: bytes) -> None:
        path = self._path(micro_batch, shard)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)          # a reader sees the whole part or none

    def gather(self, micro_batch: int) -> list[bytes]:
        paths = [self._path(micro_batch, s) for s in range(self.n_shards)]
        return wait_for(lambda: [p.read_bytes() if p.is_file() else None for p in paths],
                        f"{self.folder} micro-batch {micro_batch}", self.wait_s)


def _counts(items: np.ndarray, clicked: np.ndarray, n_items: int) -> np.ndarray:
    return np.stack([np.bincount(items, minlength=n_items),
                     np.bincount(items, weights=clicked, minlength=n_items).astype(np.int64)], 1)   # [I, 2]


class ItemStream:
    """Per micro-batch, per item, every shard's impressions and clicks (stream_item columns).

    A shard puts its own events of each micro-batch on the bus (an empty part for one it did not
    serve) and, before serving micro-batch m, gathers every shard's parts of the window's closed
    micro-batches: integer sums, so the counts do not depend on the number of shards.
    """

    def __init__(self, bus: Bus, shard: int, n_items: int, first: int, last: int,
                 window_batches: int = REALTIME_BATCHES):
        self.bus, self.shard, self.n_items, self.window_batches = bus, shard, n_items, window_batches
        self.first, self.last = first, last            # the day's micro-batches [first, last)
        self.next_ = first                             # the first micro-batch this shard has not put
        self.closed_: dict[int, np.ndarray] = {}      # micro-batch -> [I, 2] (impressions, clicks)
        self.columns = columns_of("stream_item")

    @classmethod
    def for_day(cls, lake: Lake, day: int, n_items: int, bus: Bus, shard: int,
                seconds_per_day: int = 86_400, micro_batch_seconds: int = MICRO_BATCH_SECONDS) -> "ItemStream":
        """At the start of `day`: the previous day's last window from the lake, the same for every shard."""
        first = day * seconds_per_day // micro_batch_seconds
        proc = cls(bus, shard, n_items, first, (day + 1) * seconds_per_day // micro_batch_seconds)
        if day > 0 and lake.has("impressions", day - 1):
            with lake.connect() as con:
                ev = con.sql(f"SELECT item_id, ts, clicked FROM impressions WHERE day = {day - 1} "
                             f"AND ts >= {(first - proc.window_batches) * micro_batch_seconds}").fetchnumpy()
            batch = ev["ts"] // micro_batch_seconds
            for b in np.unique(batch).tolist():
                m = batch == b
                proc.closed_[b] = _counts(ev["item_id"][m], ev["clicked"][m], n_items)
        return proc

    def _put_until(self, micro_batch: int) -> None:
        for b in range(self.next_, min(micro_batch, self.last)):
            self.bus.put(b, self.shard, b"")
        self.next_ = max(self.next_, micro_batch)

    def publish(self, micro_batch: int, items: np.ndarray, clicked: np.ndarray) -> None:
        """This shard's impression events of `micro_batch` (item [E], clicked [E])."""
        self._put_until(micro_batch)
        c = _counts(np.asarray(items, np.int64), np.asarray(clicked, bool), self.n_items)
        shown = np.flatnonzero(c[:, 0])
        self.bus.put(micro_batch, self.shard, np.column_stack([shown, c[shown]]).astype("<i8").tobytes())
        self.next_ = micro_batch + 1

    def finish(self) -> None:
        """The rest of the day is empty for this shard: the others need not wait for it."""
        self._put_until(self.last)

    def open(self, micro_batch: int) -> dict[str, np.ndarray]:
        """The stream_item columns [I] for requests of `micro_batch`: closed ones in the window."""
        self._put_until(micro_batch)
        window = range(micro_batch - self.window_batches, micro_batch)
        for b in window:
            if b >= self.first and b not in self.closed_:
                total = np.zeros((self.n_items, 2), np.int64)
                for part in self.bus.gather(b):
                    rows = np.frombuffer(part, "<i8").reshape(-1, 3)
                    total[rows[:, 0]] += rows[:, 1:]
                self.closed_[b] = total
        self.closed_ = {b: v for b, v in self.closed_.items() if b >= window.start}
        out = sum((self.closed_[b] for b in window if b in self.closed_), np.zeros((self.n_items, 2), np.int64))
        return {c.name: out[:, int(c.producer.clicks)] for c in self.columns}
