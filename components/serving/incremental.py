"""Intra-day incremental updates: an arm's own models learn from the day's stream every K micro-batches.

An updater sees what the stream sees: the impressions and clicks of micro-batches already served
and answered, never the one being served (the stream's visibility rule). Before the first
micro-batch of each window of `every` micro-batches it moves its arm's models with everything
observed since its last update:

- the fine ranker's id rows (item embeddings and biases; TorchRanker.absorb): a few plain SGD steps
  on the impressions as served (feature vectors, positions, clicks); the rest of the net stays;
- every channel with an `absorb` (popularity, item-CF, Swing): today's clicks and co-clicks join the
  daily statistics (components/recall/popular.py, itemcf.py).

It learns from the whole stream its process serves (every arm's impressions, as the daily retrain
learns from every arm's samples), so its models depend on who else was served: with shards, each
shard would see only its own users' events and the day would depend on the shard count. The story
therefore refuses shards for an experiment with an incremental arm (story/day.serve_shard); a
sharded deployment would need the shards' events merged at each micro-batch boundary first.
Each update is timed (ranker, channels, total) for the update_latency table and latency_daily.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from components.serving.config import IncrementalConfig
from components.serving.pipeline import Pipeline
from components.types import StreamClicks, UserBatch


@dataclass(frozen=True)
class UpdateTiming:
    micro_batch: int      # the micro-batch served first with the updated models
    impressions: int      # impressions the update learned from
    clicks: int
    ranker_ms: float
    channels_ms: float
    total_ms: float


class IntradayUpdater:
    """One incremental arm's learner over the day's stream; owns nothing but its buffer: the
    models it moves are its arm's pipeline's own (components/serving/build.py never shares them)."""

    def __init__(self, cfg: IncrementalConfig, pipeline: Pipeline):
        self.cfg, self.pipeline = cfg, pipeline
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._catalog = None
        self._today: dict[int, list[int]] = {}    # user -> items clicked today that updates have seen
        self._window: int | None = None
        self.timings: list[UpdateTiming] = []

    def observe(self, users: UserBatch, items: np.ndarray, x: np.ndarray, clicked: np.ndarray) -> None:
        """A served batch's shown slots (items [B, K], x [B, K, F] as served) and their clicks [B, K],
        once the world has answered them."""
        r, k = np.nonzero(items >= 0)
        self._pending.append((x[r, k], items[r, k], users.recent[r], k.astype(np.int64),
                              clicked[r, k].astype(np.float32), users.user_ids[r]))
        self._catalog = users.items.catalog

    def before(self, micro: int) -> UpdateTiming | None:
        """Called before micro-batch `micro` is served: updates when it opens a new window of
        `every` micro-batches and something was observed since the last update."""
        window = micro // self.cfg.every
        if window == self._window or not self._pending:
            self._window = window
            return None
        self._window = window
        timing = self._update(micro)
        self.timings.append(timing)
        return timing

    def _update(self, micro: int) -> UpdateTiming:
        clock = time.perf_counter
        t0 = clock()
        x, items, recent, position, label, user = (np.concatenate(a) for a in zip(*self._pending))
        self._pending = []
        catalog, cfg = self._catalog, self.cfg
        ranker = self.pipeline.ranker
        # One thread, as serving runs: the update's sums then add up in one order, run after run.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if hasattr(ranker, "absorb"):
                ranker.absorb(x, items, recent, position, label, catalog, cfg.steps, cfg.lr, cfg.batch_size)
        finally:
            torch.set_num_threads(threads)
        t1 = clock()
        clicks = self._clicks(user[label > 0], items[label > 0], recent[label > 0], catalog.n_items)
        for channel in self.pipeline.channels.values():
            if hasattr(channel, "absorb"):
                channel.absorb(clicks, cfg.stream_weight)
        t2 = clock()
        return UpdateTiming(micro, len(label), int(label.sum()), (t1 - t0) * 1000.0, (t2 - t1) * 1000.0,
                            (t2 - t0) * 1000.0)

    def _clicks(self, user: np.ndarray, item: np.ndarray, recent: np.ndarray, n_items: int) -> StreamClicks:
        """Each click paired with what its user clicked before: the recent clicks the request was
        served with (earlier days) and the earlier clicks of today the updates have seen."""
        first, second = [], []
        for u, j, hist in zip(user.tolist(), item.tolist(), recent):
            earlier = self._today.setdefault(u, [])
            seeds = [i for i in hist.tolist() if i >= 0] + earlier
            first += seeds
            second += [j] * len(seeds)
            earlier.append(j)
        return StreamClicks(item=item.astype(np.int64), first=np.asarray(first, np.int64),
                            second=np.asarray(second, np.int64), n_items=n_items)


def updaters_of(arms, pipelines) -> dict[str, IntradayUpdater]:
    """An updater per arm whose models update within the day, keyed by arm name, in arm order."""
    return {name: IntradayUpdater(a.incremental, pipelines[name]) for name, a in arms.items()
            if a.incremental.enabled}
