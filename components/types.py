"""The values that pass between recall, ranking and serving."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class Catalog:
    """The public item table as the recommender knows it."""

    item_id: np.ndarray    # [I] int64, equal to its row index
    category: np.ndarray   # [I] int32
    content: np.ndarray    # [I, d] float32
    title: np.ndarray | None = None  # [I] str, when the catalog has text

    @property
    def n_items(self) -> int:
        return len(self.item_id)


@dataclass(frozen=True)
class ItemFeatures:
    """Item-side features valid for one serving day, indexed by item id."""

    catalog: Catalog
    impressions: np.ndarray  # [I] int64
    clicks: np.ndarray       # [I] int64
    # The other daily item columns the rankers' features read (components/features/columns.py), [I] each.
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class UserBatch:
    """A batch of requests' users with their features; a batch of one is the same type."""

    user_ids: np.ndarray     # [B] int64
    impressions: np.ndarray  # [B] int64
    clicks: np.ndarray       # [B] int64
    recent: np.ndarray       # [B, H] int64 clicked items, newest first, -1 padded
    items: ItemFeatures
    request_ids: np.ndarray | None = None  # [B] when serving; seeds per-request randomness
    # The other user and real-time columns the rankers' features read, [B] each, and the serving day.
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    day: int = 0

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class Candidates:
    """Recall output: item ids [B, k] (-1 where a channel has fewer) and scores [B, k]."""

    items: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class TrainData:
    """What recall channels learn from: the click log of a window of days and the catalog."""

    day: int                 # last day included; models serve day + 1
    catalog: Catalog
    click_user: np.ndarray   # [N] int64
    click_item: np.ndarray   # [N] int64
    click_day: np.ndarray    # [N] int32
    click_ts: np.ndarray     # [N] int64


@dataclass(frozen=True)
class StreamClicks:
    """Clicks of the day's stream since the last intra-day update, with the pairs they make: what
    a channel's `absorb` takes (components/serving/incremental.py)."""

    item: np.ndarray         # [N] clicked items, in stream order
    first: np.ndarray        # [P] an item the user clicked before (earlier days or earlier today) ...
    second: np.ndarray       # [P] ... and the item of one of these clicks
    n_items: int             # today's catalogue


def pad_rows(rows: list[np.ndarray], width: int, fill: float, dtype: type) -> np.ndarray:
    """Stack ragged rows into [len(rows), width], truncating or padding with `fill`."""
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        row = np.asarray(row)[:width]
        out[i, : len(row)] = row
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, best first: [B, n] -> [B, min(k, n)]."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]                       # [B, k] unordered
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
