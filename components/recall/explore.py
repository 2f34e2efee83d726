"""Exploration: uniformly random items, so that the logging policy sees the whole catalogue."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from common.typedconf import require
from components.recall.base import read_state, write_state
from components.types import Candidates, TrainData, UserBatch


@dataclass(frozen=True)
class ExploreConfig:
    seed: int = 0

    def validate(self, where: str) -> None:
        require(self.seed >= 0, f"{where}.seed", f"must be >= 0, got {self.seed}")


class ExploreRecaller:
    name = "explore"

    def __init__(self, config: ExploreConfig = ExploreConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        self.n_items_ = data.catalog.n_items
        self.day_ = data.day
        return self

    def recall(self, users: UserBatch, k: int) -> Candidates:
        # Each row seeded by its own request (or user): the same campaign replays the same
        # exploration, and a request's items do not depend on which batch it was served in.
        keys = users.request_ids if users.request_ids is not None else users.user_ids
        k = min(k, self.n_items_)
        items = np.stack([np.random.default_rng([self.config.seed, self.day_ + 1, int(key)])
                          .choice(self.n_items_, size=k, replace=False) for key in keys]) \
            if len(keys) else np.zeros((0, k), np.int64)                            # [B, k]
        return Candidates(items=items.astype(np.int64), scores=np.zeros(items.shape, np.float32))

    def save(self, path: Path) -> None:
        write_state(path, asdict(self.config), meta=np.array([self.n_items_, self.day_]))

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        obj = cls(ExploreConfig(**config))
        obj.n_items_, obj.day_ = (int(v) for v in a["meta"])
        return obj
