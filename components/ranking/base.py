"""The ranker protocol and the training rows rankers learn from."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, Self

import numpy as np
import pyarrow as pa

from components.features.store import offline_vectors, online_vectors, recent_of
from components.types import Catalog, UserBatch


@dataclass(frozen=True)
class Samples:
    """Training rows: one (request, item) pair each, features as of request time."""

    x: np.ndarray           # [N, F]
    label: np.ndarray       # [N] float32
    position: np.ndarray    # [N] int64 rank the item was shown at: explains clicks, never served
    request_id: np.ndarray  # [N] for splits that keep a request's rows together
    # What id-based rankers (DeepFM, DIN) read besides x; empty when built by hand without them.
    item_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))          # [N]
    user_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))          # [N]
    recent: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))      # [N, H] newest first
    catalog: Catalog | None = None
    day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))             # [N] for id eviction

    def subset(self, mask: np.ndarray) -> "Samples":
        cut = (lambda a: a[mask] if len(a) == len(self.label) else a)  # noqa: E731
        return Samples(self.x[mask], self.label[mask], self.position[mask], self.request_id[mask],
                       cut(self.item_id), cut(self.user_id), cut(self.recent), self.catalog, cut(self.day))

    @classmethod
    def from_table(cls, table: pa.Table, catalog: Catalog, history: bool = True) -> "Samples":
        """`history=False` leaves `recent` empty: rankers without ids never read it, and at
        RECENT_CLICKS int64 a row it is the largest array of a day's samples."""
        x = offline_vectors(table, catalog)                                              # [N, F]
        return cls(x=x, label=table.column("label").to_numpy().astype(np.float32),
                   position=table.column("position").to_numpy().astype(np.int64),
                   request_id=table.column("request_id").to_numpy(),
                   item_id=table.column("item_id").to_numpy().astype(np.int64),
                   user_id=table.column("user_id").to_numpy().astype(np.int64),
                   recent=recent_of(table) if history else np.zeros((0, 0), np.int64), catalog=catalog,
                   day=table.column("day").to_numpy().astype(np.int64))

    @classmethod
    def concat(cls, parts: list["Samples"], catalog: Catalog) -> "Samples":
        """Rows of `parts` in order; each field is joined and its parts dropped before the next."""
        names = ("x", "label", "position", "request_id", "item_id", "user_id", "recent", "day")
        out = {}
        for name in names:
            arrays = [getattr(p, name) for p in parts]
            if name == "recent" and not any(len(a) for a in arrays):
                out[name] = np.zeros((0, 0), np.int64)
            else:
                out[name] = np.concatenate(arrays) if arrays else np.zeros(0)
            for p in parts:
                object.__setattr__(p, name, None)
        return cls(**out, catalog=catalog)


def serving_features(users: UserBatch, items: np.ndarray, ranks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The online twin of Samples.from_table: features of users [B] x items [B, n] -> [B, n, F];
    `ranks`: channel -> [B, n] the candidates' recall ranks (features/store.py online_vectors)."""
    return online_vectors(users, items, ranks)


class Ranker(Protocol):
    def fit(self, samples: Samples) -> Self: ...

    def score(self, users: UserBatch, items: np.ndarray, ranks: Mapping[str, np.ndarray] | None = None) -> np.ndarray: ...
