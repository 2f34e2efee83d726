"""Popularity per category: the decayed-popular items of the categories a user clicks most."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from components.recall.base import read_state, write_state
from components.types import Candidates, TrainData, UserBatch, top_k


@dataclass(frozen=True)
class PopularCategoryConfig:
    window_days: int = 7
    decay: float = 0.7      # a click d days old counts decay ** d
    history: int = 20       # recent clicks that decide a user's category mix


class PopularCategoryRecaller:
    """score(u, i) = share of u's recent clicks in category(i) * popularity(i) / max popularity.

    A user without history gets the global ranking (every category weighted alike), so the
    channel never returns nothing.
    """

    name = "popular_category"

    def __init__(self, config: PopularCategoryConfig = PopularCategoryConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        age = data.day - data.click_day                                             # [N]
        keep = age < self.config.window_days
        score = np.bincount(data.click_item[keep], weights=self.config.decay ** age[keep],
                            minlength=data.catalog.n_items)
        # Scaled to [0, 1) and nudged by id so ties (no clicks) are broken deterministically.
        self.scores_ = (score / max(score.max(), 1.0)).astype(np.float32)          # [I]
        self.category_ = data.catalog.category.astype(np.int64)                     # [I]
        return self

    def recall(self, users: UserBatch, k: int) -> Candidates:
        n_cat = int(self.category_.max(initial=0)) + 1
        hist = users.recent[:, : self.config.history]                               # [B, H]
        valid = hist >= 0
        cats = self.category_[np.where(valid, hist, 0)]                             # [B, H]
        mix = np.zeros((len(users), n_cat))
        np.add.at(mix, (np.nonzero(valid)[0], cats[valid]), 1.0)                    # [B, C]
        mix[~valid.any(axis=1)] = 1.0
        mix /= mix.sum(axis=1, keepdims=True)
        tie = -np.arange(len(self.scores_)) * 1e-9                                  # [I]
        scores = mix[:, self.category_] * (self.scores_ + 1e-6) + tie               # [B, I]
        idx = top_k(scores, k)                                                      # [B, k]
        top = np.take_along_axis(scores, idx, axis=1)
        return Candidates(items=np.where(top > 0, idx, -1).astype(np.int64), scores=top.astype(np.float32))

    def save(self, path: Path) -> None:
        write_state(path, asdict(self.config), scores=self.scores_, category=self.category_)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        obj = cls(PopularCategoryConfig(**config))
        obj.scores_, obj.category_ = a["scores"], a["category"]
        return obj
