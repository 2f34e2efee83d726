"""Popularity: the most clicked items of recent days, older days decayed."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from common.typedconf import require
from components.recall.base import read_state, write_state
from components.types import Candidates, StreamClicks, TrainData, UserBatch


@dataclass(frozen=True)
class PopularConfig:
    window_days: int = 7
    decay: float = 0.7   # a click d days old counts decay ** d

    def validate(self, where: str) -> None:
        require(self.window_days >= 1, f"{where}.window_days", f"must be at least 1, got {self.window_days}")
        require(0 < self.decay <= 1, f"{where}.decay", f"must be in (0, 1], got {self.decay}")


class PopularRecaller:
    name = "popular"

    def __init__(self, config: PopularConfig = PopularConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        age = data.day - data.click_day                                             # [N]
        keep = age < self.config.window_days
        weight = self.config.decay ** age[keep]
        score = np.bincount(data.click_item[keep], weights=weight, minlength=data.catalog.n_items)
        # Ties (e.g. no clicks yet) broken by item id so the ranking is deterministic.
        self.scores_ = score.astype(np.float32)
        self.ranked_ = np.argsort(-self.scores_, kind="stable")                     # [I]
        return self

    def absorb(self, clicks: StreamClicks, weight: float = 1.0) -> None:
        """An intra-day update: today's clicks so far join the daily scores, which age one day
        (decay); items born today get scores too."""
        if not hasattr(self, "daily_"):
            self.daily_, self.today_ = self.scores_, np.zeros(0)
        n = max(clicks.n_items, len(self.daily_), len(self.today_))
        self.today_ = _grown(self.today_, n) + np.bincount(clicks.item, minlength=n)
        self.scores_ = (_grown(self.daily_, n) * self.config.decay + weight * self.today_).astype(np.float32)
        self.ranked_ = np.argsort(-self.scores_, kind="stable")

    def recall(self, users: UserBatch, k: int) -> Candidates:
        # With no click at all (the bootstrap day) nothing is popular: ranking would give the first
        # k item ids, shown to everyone, worse than a random slate; other channels fill the slate.
        items = self.ranked_[:k] if self.scores_.any() else np.full(min(k, len(self.ranked_)), -1)  # [k]
        b = len(users)
        return Candidates(items=np.tile(items, (b, 1)),
                          scores=np.tile(np.where(items >= 0, self.scores_[np.maximum(items, 0)], 0), (b, 1)))

    def save(self, path: Path) -> None:
        write_state(path, asdict(self.config), scores=self.scores_, ranked=self.ranked_)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, arrays = read_state(path)
        obj = cls(PopularConfig(**config))
        obj.scores_, obj.ranked_ = arrays["scores"], arrays["ranked"]
        return obj


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float64)
    out[:len(a)] = a
    return out
