"""Low-frequency id admission and stale-id eviction: an id gets its own embedding row only past a
count, and loses it when its last event is older than a number of days; the rest share a few
hashed rows, as large production systems do to keep tables small and rare or stale ids sane."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.typedconf import require


def check_knobs(where: str, min_count: int, buckets: int, evict_days: int, min_buckets: int = 1) -> None:
    """The admission knobs every id-embedding config carries, checked the same way."""
    require(min_count >= 0, f"{where}.min_count", f"must be >= 0, got {min_count}")
    require(buckets >= min_buckets, f"{where}.hash_buckets", f"must be at least {min_buckets}, got {buckets}")
    require(evict_days >= 0, f"{where}.evict_days", f"must be >= 0 (0: never evict), got {evict_days}")


@dataclass(frozen=True)
class IdTable:
    """Maps ids to embedding rows: admitted ids 0..A-1, the others (and ids born after training)
    A + id % buckets, padding (-1) the last row. The table has `size` rows. With no buckets (0)
    every id is admitted and an unknown one reads the padding row."""

    rows: np.ndarray   # [n_ids] row of every id known at training
    n_admitted: int
    buckets: int

    @classmethod
    def fit(cls, ids: np.ndarray, n_ids: int, min_count: int, buckets: int, days: np.ndarray | None = None,
            evict_days: int = 0, today: int | None = None) -> "IdTable":
        """Admit ids with at least `min_count` events; with `evict_days` > 0 also evict those whose
        last event (`days` [N], row-aligned with `ids`) is more than `evict_days` before `today`
        (default: the last day of `days`). Rows follow id order, so a table is a function of its
        inputs alone."""
        known = ids >= 0
        count = np.bincount(ids[known], minlength=n_ids)[:n_ids]
        admitted = count >= min_count
        if evict_days > 0:
            if days is None or len(days) != len(ids):
                raise ValueError("eviction needs the day of every event (days row-aligned with ids)")
            last = np.full(n_ids, np.iinfo(np.int64).min, np.int64)                 # never seen: evicted
            np.maximum.at(last, ids[known], np.asarray(days, np.int64)[known])
            now = today if today is not None else int(np.max(days, initial=0))
            admitted &= last >= now - evict_days
        if buckets == 0 and not admitted.all():
            raise ValueError("with no hash buckets every id must be admitted (min_count 0, no eviction)")
        rows = np.empty(n_ids, np.int64)
        n_admitted = int(admitted.sum())
        rows[admitted] = np.arange(n_admitted)
        rest = np.flatnonzero(~admitted)
        rows[rest] = n_admitted + rest % max(buckets, 1)
        return cls(rows, n_admitted, buckets)

    @classmethod
    def identity(cls, n_ids: int) -> "IdTable":
        """Every id its own row, no buckets: the table of a model without admission."""
        return cls(np.arange(n_ids, dtype=np.int64), n_ids, 0)

    @property
    def size(self) -> int:
        return self.n_admitted + self.buckets + 1

    @property
    def padding(self) -> int:
        return self.size - 1

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids of any shape."""
        known = (ids >= 0) & (ids < len(self.rows))
        unknown = self.n_admitted + np.abs(ids) % self.buckets if self.buckets else self.padding
        out = np.where(known, self.rows[np.clip(ids, 0, max(len(self.rows) - 1, 0))], unknown)
        return np.where(ids < 0, self.padding, out).astype(np.int64)
