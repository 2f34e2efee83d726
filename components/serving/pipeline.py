"""The serving pipeline: channels -> merge (dedupe, drop seen) -> rank -> slate, timed per stage."""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from components.ranking.base import Ranker
from components.recall.base import Recaller
from components.serving.config import ArmConfig
from components.types import UserBatch, top_k


@dataclass(frozen=True)
class ServeResult:
    items: np.ndarray                       # [B, K] int64, -1 where fewer candidates than K
    scores: np.ndarray                      # [B, K] float32
    channels: list[list[tuple[str, ...]]]   # [B][K] the channels each item came from
    timings_ms: dict[str, float]            # stage -> wall-clock ms for the whole batch


class Pipeline:
    """One arm's recommender; a batch of one request is the same code path as a batch of many."""

    def __init__(self, arm: ArmConfig, slate_size: int, channels: Mapping[str, Recaller],
                 ranker: Ranker | None):
        missing = [c for c in arm.channels if c not in channels]
        if missing:
            raise ValueError(f"arm needs channels {missing} that were not loaded")
        if arm.ranker != "none" and ranker is None:
            raise ValueError(f"arm needs ranker '{arm.ranker}' that was not loaded")
        self.arm = arm
        self.slate_size = slate_size
        self.channels = {name: channels[name] for name in arm.channels}
        self.ranker = ranker if arm.ranker != "none" else None

    def serve(self, users: UserBatch) -> ServeResult:
        clock = time.perf_counter
        t0 = clock()
        h = users.recent.shape[1]
        # Ask each channel for extra items: seen ones and duplicates are dropped in the merge.
        recalled = {name: ch.recall(users, self.arm.channels[name] + h) for name, ch in self.channels.items()}
        t1 = clock()
        merged, origin, order = self._merge(users, recalled)
        t2 = clock()
        if self.ranker is not None and (merged >= 0).any():   # none at all: an empty catalogue
            scores = self.ranker.score(users, merged)                                # [B, M]
        else:
            scores = np.where(merged >= 0, -order, -np.inf).astype(np.float32)       # interleave
        idx = top_k(scores, self.slate_size)                                          # [B, K]
        items = np.take_along_axis(merged, idx, axis=1)
        top_scores = np.take_along_axis(scores, idx, axis=1)
        items = np.where(np.isfinite(top_scores), items, -1)
        t3 = clock()
        names = list(self.channels)
        channels = [[tuple(names[c] for c in range(len(names)) if origin[b, j] >> c & 1)
                     for j in idx[b]] for b in range(len(users))]
        ms = lambda a, b: (b - a) * 1000.0  # noqa: E731
        return ServeResult(items=items, scores=np.nan_to_num(top_scores, neginf=0.0).astype(np.float32),
                           channels=channels,
                           timings_ms={"recall": ms(t0, t1), "merge": ms(t1, t2), "rank": ms(t2, t3),
                                       "total": ms(t0, t3)})

    def _merge(self, users: UserBatch, recalled: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per request: each channel adds up to its quota of new items; seen items are dropped.

        Returns merged ids [B, M] (-1 padded), a bitmask of source channels [B, M], and a
        round-robin order key [B, M] that interleaves channels when no ranker is used.
        """
        b = len(users)
        width = max(sum(self.arm.channels.values()), self.slate_size)
        merged = np.full((b, width), -1, np.int64)
        origin = np.zeros((b, width), np.int64)
        order = np.full((b, width), np.inf)
        for row in range(b):
            seen = set(users.recent[row][users.recent[row] >= 0].tolist())
            slot: dict[int, int] = {}
            for c, (name, cands) in enumerate(recalled.items()):
                taken = 0
                for item in cands.items[row].tolist():
                    if taken == self.arm.channels[name]:
                        break
                    if item < 0 or item in seen:
                        continue
                    if item in slot:
                        origin[row, slot[item]] |= 1 << c
                        continue
                    j = len(slot)
                    slot[item] = j
                    merged[row, j], origin[row, j] = item, 1 << c
                    order[row, j] = taken * len(recalled) + c
                    taken += 1
        return merged, origin, order
