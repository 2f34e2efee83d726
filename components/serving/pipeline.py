"""The serving pipeline: channels -> merge (dedupe, drop seen) -> coarse -> fine -> slate, timed per stage."""
from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress

import numpy as np
import torch

from components.contracts import STAGES
from components.ranking.base import Ranker
from components.recall.base import Recaller
from components.serving.config import ArmConfig
from components.types import Candidates, UserBatch, top_k


def channel_lists(names: Sequence[str], masks: np.ndarray) -> list[tuple[str, ...]]:
    """Provenance bitmasks (bit c: channel `names[c]`) [n] -> the channels of each, in `names` order."""
    table = [tuple(compress(names, [m >> c & 1 for c in range(len(names))])) for m in range(1 << len(names))]
    return [table[m] for m in masks.tolist()]


@dataclass(frozen=True)
class ServeResult:
    items: np.ndarray                       # [B, K] int64, -1 where fewer candidates than K
    scores: np.ndarray                      # [B, K] float32
    # Provenance keeps this one form, from the merge to the impressions table: bit c of a slot is
    # set when channel `channel_names[c]` (the arm's config order) recalled its item.
    origin: np.ndarray                      # [B, K] int64 bitmask
    channel_names: tuple[str, ...]
    # [B, K, C] int32: the item's rank in channel c's own list (0 the top), -1 where c did not
    # recall it: logged with the impression (impressions.recall_ranks), read by the ranker.
    ranks: np.ndarray
    timings_ms: dict[str, float]            # stage (contracts.STAGES) -> wall-clock ms for the whole batch
    channel_ms: dict[str, float] = field(default_factory=dict)  # recall channel -> its own wall-clock ms

    @property
    def channels(self) -> list[list[tuple[str, ...]]]:
        """[B][K] the channels each item came from, decoded for readers."""
        flat = channel_lists(self.channel_names, self.origin.reshape(-1))
        k = self.origin.shape[1]
        return [flat[r * k:(r + 1) * k] for r in range(len(self.origin))]


class Pipeline:
    """One arm's recommender; a batch of one request is the same code path as a batch of many."""

    def __init__(self, arm: ArmConfig, slate_size: int, channels: Mapping[str, Recaller],
                 ranker: Ranker | None, coarse: Ranker | None = None):
        missing = [c for c in arm.channels if c not in channels]
        if missing:
            raise ValueError(f"arm needs channels {missing} that were not loaded")
        if arm.fine_ranker != "none" and ranker is None:
            raise ValueError(f"arm needs ranker '{arm.fine_ranker}' that was not loaded")
        if arm.coarse != "none" and coarse is None:
            raise ValueError(f"arm needs coarse ranker '{arm.coarse}' that was not loaded")
        self.arm = arm
        self.slate_size = slate_size
        self.channels = {name: channels[name] for name in arm.channels}
        self.ranker = ranker if arm.fine_ranker != "none" else None
        self.coarse = coarse if arm.coarse != "none" else None
        self.channel_names = tuple(self.channels)
        # Channels run side by side when asked (torch, numpy and scipy release the GIL), so the
        # recall stage takes as long as its slowest channel rather than their sum.
        self._pool = ThreadPoolExecutor(len(self.channels)) if arm.parallel_recall and len(self.channels) > 1 else None

    def _recall_one(self, name: str, users: UserBatch, k: int) -> tuple[object, float]:
        t = time.perf_counter()
        cands = self.channels[name].recall(users, k)
        return cands, (time.perf_counter() - t) * 1000.0

    def serve(self, users: UserBatch) -> ServeResult:
        # A micro-batch is too small to split across threads: on a busy machine torch's
        # intra-op threads wait on each other and a batch of 16 ran ~10x slower with 2 threads.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._serve(users)
        finally:
            torch.set_num_threads(threads)

    def _serve(self, users: UserBatch) -> ServeResult:
        clock = time.perf_counter
        marks = [clock()]                       # one per stage boundary, in the order of STAGES
        h = users.recent.shape[1]
        # Ask each channel for extra items: seen ones and duplicates are dropped in the merge.
        quota = {name: self.arm.channels[name] + h for name in self.channels}
        if self._pool is not None:
            futures = {n: self._pool.submit(self._recall_one, n, users, quota[n]) for n in self.channels}
            done = {n: f.result() for n, f in futures.items()}
        else:
            done = {n: self._recall_one(n, users, quota[n]) for n in self.channels}
        recalled = {n: d[0] for n, d in done.items()}
        marks.append(clock())
        merged, origin, order, ranks = self._merge(users, recalled)
        marks.append(clock())
        if self.coarse is not None and merged.shape[1] > self.arm.coarse_keep and (merged >= 0).any():
            coarse = self.coarse.score(users, merged, self._by_channel(ranks))       # [B, M]
            keep = top_k(coarse, self.arm.coarse_keep)                               # [B, C]
            dropped = ~np.isfinite(np.take_along_axis(coarse, keep, axis=1))
            merged = np.where(dropped, -1, np.take_along_axis(merged, keep, axis=1))
            origin = np.take_along_axis(origin, keep, axis=1)
            order = np.where(dropped, np.inf, np.take_along_axis(order, keep, axis=1))
            ranks = np.take_along_axis(ranks, keep[:, :, None], axis=1)
        marks.append(clock())
        if self.ranker is not None and (merged >= 0).any():   # none at all: an empty catalogue
            scores = self.ranker.score(users, merged, self._by_channel(ranks))       # [B, M]
        else:
            scores = np.where(merged >= 0, -order, -np.inf).astype(np.float32)       # interleave
        idx = top_k(scores, self.slate_size)                                          # [B, K]
        items = np.take_along_axis(merged, idx, axis=1)
        top_scores = np.take_along_axis(scores, idx, axis=1)
        items = np.where(np.isfinite(top_scores), items, -1)
        marks.append(clock())
        # Each stage but the last lasts from its mark to the next; `total` spans them all.
        timings = {s: (b - a) * 1000.0 for s, a, b in zip(STAGES[:-1], marks, marks[1:])}
        timings[STAGES[-1]] = (marks[-1] - marks[0]) * 1000.0
        return ServeResult(items=items, scores=np.nan_to_num(top_scores, neginf=0.0).astype(np.float32),
                           origin=np.take_along_axis(origin, idx, axis=1), channel_names=self.channel_names,
                           ranks=np.where((items >= 0)[:, :, None], np.take_along_axis(ranks, idx[:, :, None], axis=1), -1),
                           timings_ms=timings, channel_ms={n: d[1] for n, d in done.items()})

    def recall_and_merge(self, users: UserBatch) -> tuple[dict[str, Candidates], np.ndarray, np.ndarray]:
        """The recall stage and the merge exactly as `serve` runs them: each channel's list, the
        merged ids [B, M] and their round-robin order key [B, M] (for offline recall metrics)."""
        h = users.recent.shape[1]
        recalled = {n: self.channels[n].recall(users, self.arm.channels[n] + h) for n in self.channels}
        merged, _, order, _ = self._merge(users, recalled)
        return recalled, merged, order

    def _by_channel(self, ranks: np.ndarray) -> dict[str, np.ndarray]:
        """[B, M, C] -> channel name -> [B, M], what the rankers' features read."""
        return {name: ranks[:, :, c] for c, name in enumerate(self.channel_names)}

    def _merge(self, users: UserBatch, recalled: dict[str, Candidates]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per request: each channel, in config order, adds up to its quota of new items, reading
        its list until the quota is met; seen items are dropped; an item a previous channel
        already added only gains this channel's bit. Vectorised over requests and items, looped
        over channels (a handful).

        Returns merged ids [B, M] (-1 padded), a bitmask of source channels [B, M], a
        round-robin order key [B, M] that interleaves channels when no ranker is used, and each
        item's index in every channel's list [B, M, C] (-1 where its bit is not set).
        """
        b = len(users)
        width = max(sum(self.arm.channels.values()), self.slate_size)
        merged = np.full((b, width), -1, np.int64)
        origin = np.zeros((b, width), np.int64)
        order = np.full((b, width), np.inf)
        n_channels = len(recalled)
        ranks = np.full((b, width, n_channels), -1, np.int32)
        top = max([users.recent.max(initial=-1)] + [int(c.items.max(initial=-1)) for c in recalled.values()])
        rows = np.arange(b)[:, None]                                                # [B, 1]
        slot_of = np.full((b, top + 2), -1, np.int64)                               # [B, I+1] item -> slot
        seen = np.zeros((b, top + 2), bool)
        r, c = np.nonzero(users.recent >= 0)
        seen[r, users.recent[r, c]] = True
        filled = np.zeros(b, np.int64)                                              # [B]
        for ch, (name, cands) in enumerate(recalled.items()):
            quota = self.arm.channels[name]
            items = cands.items                                                     # [B, k]
            ok = items >= 0
            safe = np.where(ok, items, top + 1)                                     # column top+1: never used
            # A channel repeating an item: only its first occurrence counts.
            by_item = np.argsort(safe, axis=1, kind="stable")                       # [B, k]
            sorted_items = np.take_along_axis(safe, by_item, axis=1)
            repeat = np.zeros(items.shape, bool)
            np.put_along_axis(repeat, by_item[:, 1:], sorted_items[:, 1:] == sorted_items[:, :-1], axis=1)
            usable = ok & ~repeat & ~seen[rows, safe]
            existing = slot_of[rows, safe]                                          # [B, k]
            new = usable & (existing < 0)
            count = np.cumsum(new, axis=1)                                          # [B, k]
            active = (count - new) < quota                                          # read before the quota is met
            take = new & active
            again = usable & (existing >= 0) & active
            ar, ac = np.nonzero(again)
            origin[ar, existing[ar, ac]] |= 1 << ch
            ranks[ar, existing[ar, ac], ch] = ac
            tr, tc = np.nonzero(take)
            rank = count[tr, tc] - 1
            slot = filled[tr] + rank
            merged[tr, slot] = items[tr, tc]
            origin[tr, slot] = 1 << ch
            ranks[tr, slot, ch] = tc
            order[tr, slot] = rank * n_channels + ch
            slot_of[tr, items[tr, tc]] = slot
            filled += take.sum(axis=1)
        return merged, origin, order, ranks
