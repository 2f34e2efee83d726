"""Swing (Alibaba): items i and j are similar when pairs of users who both clicked them share
little else; a pair of users with a narrow overlap is stronger evidence than two heavy users."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp

from common.typedconf import require
from components.recall.itemcf import ItemCFRecaller
from components.types import TrainData


@dataclass(frozen=True)
class SwingConfig:
    window_days: int = 14
    neighbours: int = 50        # similar items kept per item
    history: int = 10           # most recent clicks a user's recall starts from
    alpha: float = 1.0          # smoothing of 1 / (alpha + |I_u & I_v|)
    user_weight: bool = True    # also weight each user by 1 / sqrt(|I_u|) (heavy users count less)
    max_user_items: int = 200   # a user's most recent distinct items used (bounds the pair count)
    recency_decay: float = 0.0  # the user's k-th most recent click (k from 0) seeds with 1 / (k + 1) ** decay

    def validate(self, where: str) -> None:
        require(self.recency_decay >= 0, f"{where}.recency_decay", f"must be >= 0, got {self.recency_decay}")


def swing_similarity(clicks: sp.csr_matrix, cfg: SwingConfig) -> sp.csr_matrix:
    """sim(i, j) = sum over user pairs u < v who both clicked i and j of w_u w_v / (alpha + |I_u & I_v|).

    Vectorised: for every pair of users with an overlap of 2+ items, the row a_u * a_v holds
    their common items; sim = P^T diag(weight) P over those rows.
    """
    a = clicks.astype(np.float32).tocsr()                                           # [U, I] binary
    overlap = sp.triu(a @ a.T, k=1).tocoo()                                         # [U, U] |I_u & I_v|
    keep = overlap.data >= 2
    u, v, o = overlap.row[keep], overlap.col[keep], overlap.data[keep]
    n_items = a.shape[1]
    if len(u) == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    weight = 1.0 / (cfg.alpha + o)                                                  # [P]
    if cfg.user_weight:
        size = np.asarray(a.sum(axis=1)).ravel()                                    # [U]
        weight = weight / np.sqrt(size[u] * size[v])
    common = a[u].multiply(a[v]).tocsr()                                            # [P, I]
    sim = (common.T @ sp.diags(weight.astype(np.float32)) @ common).tocsr()         # [I, I]
    sim.setdiag(0)
    sim.eliminate_zeros()
    return sim


class SwingRecaller(ItemCFRecaller):
    """Serving is item-CF's (sum the neighbours of the recent clicks); only the similarity differs."""

    name = "swing"
    config_cls = SwingConfig

    def __init__(self, config: SwingConfig = SwingConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        cfg, n = self.config, data.catalog.n_items
        keep = data.day - data.click_day < cfg.window_days
        users, items, ts = data.click_user[keep], data.click_item[keep], data.click_ts[keep]
        _, rows = np.unique(users, return_inverse=True)
        n_users = rows.max() + 1 if len(rows) else 0
        # Keep each user's most recent `max_user_items` clicks: one heavy user would otherwise
        # pair with everyone.
        order = np.lexsort((-ts, rows))
        rank = np.arange(len(order)) - np.searchsorted(rows[order], rows[order])
        sel = order[rank < cfg.max_user_items]
        clicks = sp.csr_matrix((np.ones(len(sel), np.float32), (rows[sel], items[sel])), shape=(n_users, n))
        clicks.data[:] = 1.0
        self.sim_ = self._keep_top(swing_similarity(clicks, cfg), cfg.neighbours).astype(np.float32)
        return self
