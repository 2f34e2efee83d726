"""The ranker protocol and the training rows rankers learn from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self

import numpy as np
import pyarrow as pa

from components.features.definitions import vectorize
from components.features.store import user_batch_from_table
from components.types import Catalog, ItemFeatures, UserBatch


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

    def subset(self, mask: np.ndarray) -> "Samples":
        cut = (lambda a: a[mask] if len(a) == len(self.label) else a)  # noqa: E731
        return Samples(self.x[mask], self.label[mask], self.position[mask], self.request_id[mask],
                       cut(self.item_id), cut(self.user_id), cut(self.recent), self.catalog)

    @classmethod
    def from_table(cls, table: pa.Table, catalog: Catalog) -> "Samples":
        items = table.column("item_id").to_numpy()[:, None]                              # [N, 1]
        users = user_batch_from_table(table, ItemFeatures(catalog, np.zeros(0), np.zeros(0)))
        x = vectorize(users.impressions, users.clicks, users.recent, items,
                      table.column("i_impressions").to_numpy()[:, None],
                      table.column("i_clicks").to_numpy()[:, None], catalog)[:, 0, :]   # [N, F]
        return cls(x=x, label=table.column("label").to_numpy().astype(np.float32),
                   position=table.column("position").to_numpy().astype(np.int64),
                   request_id=table.column("request_id").to_numpy(),
                   item_id=items[:, 0].astype(np.int64), user_id=users.user_ids.astype(np.int64),
                   recent=users.recent, catalog=catalog)


def serving_features(users: UserBatch, items: np.ndarray) -> np.ndarray:
    """The online twin of Samples.from_table: features of users [B] x items [B, n] -> [B, n, F]."""
    safe = np.where(items >= 0, items, 0)
    return vectorize(users.impressions, users.clicks, users.recent, items,
                     users.items.impressions[safe], users.items.clicks[safe], users.items.catalog)


class Ranker(Protocol):
    def fit(self, samples: Samples) -> Self: ...

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray: ...
