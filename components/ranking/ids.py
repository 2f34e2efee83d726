"""Low-frequency id admission: an id gets its own embedding row only past a count; the rest
share a few hashed rows, as large production systems do to keep tables small and rare ids sane."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IdTable:
    """Maps ids to embedding rows: admitted ids 0..A-1, the others (and ids born after training)
    A + id % buckets, padding (-1) the last row. The table has `size` rows."""

    rows: np.ndarray   # [n_ids] row of every id known at training
    n_admitted: int
    buckets: int

    @classmethod
    def fit(cls, ids: np.ndarray, n_ids: int, min_count: int, buckets: int) -> "IdTable":
        count = np.bincount(ids[ids >= 0], minlength=n_ids)[:n_ids]
        admitted = count >= min_count
        rows = np.empty(n_ids, np.int64)
        n_admitted = int(admitted.sum())
        rows[admitted] = np.arange(n_admitted)
        rest = np.flatnonzero(~admitted)
        rows[rest] = n_admitted + rest % buckets
        return cls(rows, n_admitted, buckets)

    @property
    def size(self) -> int:
        return self.n_admitted + self.buckets + 1

    @property
    def padding(self) -> int:
        return self.size - 1

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids of any shape."""
        known = (ids >= 0) & (ids < len(self.rows))
        out = np.where(known, self.rows[np.clip(ids, 0, max(len(self.rows) - 1, 0))],
                       self.n_admitted + np.abs(ids) % self.buckets)
        return np.where(ids < 0, self.padding, out).astype(np.int64)
