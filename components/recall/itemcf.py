"""Item-CF: items co-clicked by the same users are similar; recall the neighbours of recent clicks.

Two ways to count a co-click. With `pair_window` 0 every pair of items one user clicked within
`window_days` counts once (the classic user-item matrix product). With `pair_window` w > 0 only
pairs at most w positions apart in the user's time-ordered clicks count, each weighted by
1 / distance ** `distance_decay` (and `forward_weight` when the second item came after the first):
on sequential data the next few clicks say far more about an item than the whole history does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from common.typedconf import require
from components.recall.base import read_state, write_state
from components.types import Candidates, StreamClicks, TrainData, UserBatch, top_k


@dataclass(frozen=True)
class ItemCFConfig:
    window_days: int = 14
    neighbours: int = 50      # similar items kept per item
    history: int = 10         # most recent clicks a user's recall starts from
    alpha: float = 0.5        # similarity = co / (n_i ** alpha * n_j ** (1 - alpha))
    normalise: bool = True    # False: similarity is the raw (weighted) co-click count
    pair_window: int = 0      # 0: any two clicks of a user pair up; w: only clicks <= w positions apart
    distance_decay: float = 0.0   # windowed pair weight 1 / distance ** decay
    forward_weight: float = 1.0   # weight of "j came after i" relative to "j came before i" (windowed)
    recency_decay: float = 0.0    # the user's k-th most recent click (k from 0) seeds with 1 / (k + 1) ** decay

    def validate(self, where: str) -> None:
        for name in ("window_days", "neighbours", "history"):
            value = getattr(self, name)
            require(value >= 1, f"{where}.{name}", f"must be at least 1, got {value}")
        require(0 <= self.alpha <= 1, f"{where}.alpha", f"must be between 0 and 1, got {self.alpha}")
        require(self.recency_decay >= 0, f"{where}.recency_decay", f"must be >= 0, got {self.recency_decay}")
        require(self.pair_window >= 0, f"{where}.pair_window",
                f"must be >= 0 (0 pairs every two clicks of a user), got {self.pair_window}")
        require(self.forward_weight >= 0, f"{where}.forward_weight", f"must be >= 0, got {self.forward_weight}")


def windowed_cooccurrence(data: TrainData, keep: np.ndarray, cfg: ItemCFConfig) -> sp.csr_matrix:
    """co[i, j] = sum over a user's clicks i then j at most `pair_window` apart of the pair weight."""
    n = data.catalog.n_items
    users, items, ts = data.click_user[keep], data.click_item[keep], data.click_ts[keep]
    order = np.lexsort((np.arange(len(ts)), ts, users))          # by user, then time, then log order
    users, items = users[order], items[order]
    rows, cols, vals = [], [], []
    for d in range(1, cfg.pair_window + 1):
        same = users[:-d] == users[d:]                                              # [N - d]
        rows.append(items[:-d][same])
        cols.append(items[d:][same])
        vals.append(np.full(int(same.sum()), 1.0 / d ** cfg.distance_decay, np.float32))
    after = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n, n))                                             # [I, I] j after i
    return (cfg.forward_weight * after + after.T).tocsr()


class ItemCFRecaller:
    name = "itemcf"
    config_cls: type = ItemCFConfig   # subclasses (Swing) change only how `sim_` is computed

    def __init__(self, config: ItemCFConfig = ItemCFConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        cfg, n = self.config, data.catalog.n_items
        keep = data.day - data.click_day < cfg.window_days
        users, items = data.click_user[keep], data.click_item[keep]
        _, rows = np.unique(users, return_inverse=True)
        clicks = sp.csr_matrix((np.ones(len(items), np.float32), (rows, items)),
                               shape=(rows.max() + 1 if len(rows) else 0, n))
        clicks.data[:] = 1.0                                                        # [U, I] binary
        if cfg.pair_window > 0 and len(items):
            co = windowed_cooccurrence(data, keep, cfg)                             # [I, I]
        else:
            co = (clicks.T @ clicks).tocsr()                                        # [I, I]
        co.setdiag(0)
        co.eliminate_zeros()
        if cfg.normalise:
            count = np.asarray(clicks.sum(axis=0)).ravel() + 1e-9                   # [I]
            co = sp.diags(count ** -cfg.alpha) @ co @ sp.diags(count ** -(1 - cfg.alpha))
        self.sim_ = self._keep_top(co.tocsr(), cfg.neighbours).astype(np.float32)
        return self

    @staticmethod
    def _keep_top(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for i in range(m.shape[0]):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            if hi == lo:
                continue
            order = np.argsort(-m.data[lo:hi], kind="stable")[:k]
            cols.append(m.indices[lo:hi][order])
            vals.append(m.data[lo:hi][order])
            rows.append(np.full(len(order), i))
        if not rows:
            return sp.csr_matrix(m.shape, dtype=np.float32)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)

    def absorb(self, clicks: StreamClicks, weight: float = 1.0) -> None:
        """An intra-day update: today's co-clicks (each click paired with the user's earlier
        clicks), normalised as `fit` normalises but by today's own counts, are added to the daily
        similarity with `weight`; items born today get neighbours too."""
        if not hasattr(self, "daily_"):
            self.daily_, self.today_ = self.sim_, sp.csr_matrix((0, 0), dtype=np.float32)
        n = max(clicks.n_items, self.daily_.shape[0], self.today_.shape[0])
        keep = clicks.first != clicks.second
        pairs = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (clicks.first[keep], clicks.second[keep])),
                              shape=(n, n))
        self.today_ = (_grown(self.today_, n) + pairs + pairs.T).tocsr()            # [I, I] symmetric
        today = self.today_
        if self.config.normalise:
            count = np.asarray(today.sum(axis=1)).ravel() + 1e-9                    # [I]
            a = self.config.alpha
            today = sp.diags(count ** -a) @ today @ sp.diags(count ** -(1 - a))
        self.sim_ = (_grown(self.daily_, n) + weight * today).tocsr().astype(np.float32)

    def recall(self, users: UserBatch, k: int) -> Candidates:
        hist = users.recent[:, : self.config.history]                               # [B, H]
        b, n = len(users), self.sim_.shape[0]
        r, c = np.nonzero(hist >= 0)
        # `recent` is newest first, so the column is how many clicks ago the seed was.
        weight = (1.0 / (c + 1.0) ** self.config.recency_decay).astype(np.float32)
        seeds = sp.csr_matrix((weight, (r, hist[r, c])), shape=(b, n))
        scores = (seeds @ self.sim_).toarray()                                      # [B, I]
        idx = top_k(scores, k)                                                      # [B, k]
        top = np.take_along_axis(scores, idx, axis=1)
        return Candidates(items=np.where(top > 0, idx, -1), scores=top.astype(np.float32))

    def save(self, path: Path) -> None:
        s = self.sim_
        write_state(path, asdict(self.config), data=s.data, indices=s.indices, indptr=s.indptr,
                    shape=np.array(s.shape))

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        obj = cls(cls.config_cls(**config))
        obj.sim_ = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
        return obj


def _grown(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """A square matrix padded with empty rows and columns to [n, n]."""
    indptr = np.concatenate([m.indptr, np.full(n - m.shape[0], m.indptr[-1])])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=(n, n))
