"""Real-time features as a stream processor computes them: events arrive micro-batch by
micro-batch, and a micro-batch's events become visible when it closes.

The offline twin is `columns.stream_sql`: for a request at ts t, the micro-batches closed before
t's own one began, within the last REALTIME_BATCHES of them. Serving closes micro-batch m before
serving any request of micro-batch m + 1, so both sides count exactly the same events.
"""
from __future__ import annotations

import numpy as np

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
