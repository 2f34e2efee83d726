"""Cold start: items nobody has clicked yet (including those born after training), ranked by how
close their content and category are to the user's recent clicks; newest first without history."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from components.recall.base import read_state, write_state
from components.types import Candidates, TrainData, UserBatch, top_k


@dataclass(frozen=True)
class ColdStartConfig:
    window_days: int = 30       # an item clicked within this window is no longer cold
    history: int = 20           # recent clicks that form the user's content profile
    category_weight: float = 0.5  # score = cosine(content) + weight * share of history in the category


class ColdStartRecaller:
    name = "coldstart"

    def __init__(self, config: ColdStartConfig = ColdStartConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        keep = data.day - data.click_day < self.config.window_days
        self.warm_ = np.bincount(data.click_item[keep], minlength=data.catalog.n_items) > 0   # [I_fit]
        return self

    def recall(self, users: UserBatch, k: int) -> Candidates:
        catalog = users.items.catalog
        n = catalog.n_items
        cold = np.ones(n, bool)
        cold[: min(n, len(self.warm_))] = ~self.warm_[:n]                           # [I] unseen at fit: cold
        content = catalog.content / np.maximum(np.linalg.norm(catalog.content, axis=1, keepdims=True), 1e-9)
        hist = users.recent[:, : self.config.history]                               # [B, H]
        valid = hist >= 0
        safe = np.where(valid, hist, 0)
        profile = (content[safe] * valid[..., None]).sum(axis=1)                    # [B, d]
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
        n_cat = int(catalog.category.max(initial=0)) + 1
        mix = np.zeros((len(users), n_cat))
        np.add.at(mix, (np.nonzero(valid)[0], catalog.category[safe[valid]]), 1.0)
        mix /= np.maximum(valid.sum(axis=1, keepdims=True), 1)                      # [B, C]
        scores = profile @ content.T + self.config.category_weight * mix[:, catalog.category]   # [B, I]
        # No history: newest first (ids are assigned in arrival order); ranks well below any match.
        newest = np.arange(n) / max(n, 1) - 10.0
        scores = np.where(valid.any(axis=1)[:, None], scores, newest[None, :])
        scores = np.where(cold[None, :], scores, -np.inf)
        idx = top_k(scores, k)                                                      # [B, k]
        top = np.take_along_axis(scores, idx, axis=1)
        ok = np.isfinite(top)
        return Candidates(items=np.where(ok, idx, -1).astype(np.int64), scores=np.where(ok, top, 0).astype(np.float32))

    def save(self, path: Path) -> None:
        write_state(path, asdict(self.config), warm=self.warm_)

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        obj = cls(ColdStartConfig(**config))
        obj.warm_ = a["warm"]
        return obj
