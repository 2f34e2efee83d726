"""User-behaviour KV cache reuse: a user's history is encoded once, and a later request (the same day
or the next) only prefills the behaviour tokens appended since.

`UserKVCache` is a bounded in-process LRU: user id -> the tokens encoded and their per-layer keys and
values. `recall_with_cache` looks every user up, reuses the longest common prefix of the stored tokens
and the new history (at least the last token is always recomputed, since its hidden state feeds the
first level's logits), runs `FastBeamSearch` once per group of users with the same cached and new
lengths (rows stay unpadded), and stores each user's whole history back. Keys before a position depend
only on the tokens up to it (causal attention, absolute rotary positions), so the result is the same
as a full prefill of the new history. `KVSlab` is the same idea laid out for a server's batches.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from common.typedconf import ConfigError
from components.recall.generative.fast_beam import FastBeamSearch


@dataclass(frozen=True)
class CachedHistory:
    tokens: torch.Tensor   # [T] the history these keys encode
    kv: list               # per layer (k, v) [1, hkv, T, D]


class UserKVCache:
    """At most max_users encoded histories; the least recently used is dropped first."""

    def __init__(self, max_users: int):
        if max_users < 1:
            raise ConfigError(f"UserKVCache.max_users={max_users}: must be >= 1")
        self.max_users = max_users
        self._entries: OrderedDict[int, CachedHistory] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user: int) -> CachedHistory | None:
        entry = self._entries.get(user)
        if entry is not None:
            self._entries.move_to_end(user)
        return entry

    def put(self, user: int, entry: CachedHistory) -> None:
        self._entries[user] = entry
        self._entries.move_to_end(user)
        while len(self._entries) > self.max_users:
            self._entries.popitem(last=False)


def reusable_length(entry: CachedHistory | None, history: torch.Tensor) -> int:
    """How many leading tokens of history [T] the entry's keys cover (at most T - 1)."""
    if entry is None:
        return 0
    n = min(len(entry.tokens), len(history) - 1)
    differ = (entry.tokens[:n] != history[:n]).nonzero()
    return n if len(differ) == 0 else int(differ[0])


@torch.no_grad()
def recall_with_cache(search: FastBeamSearch, store: UserKVCache, users: list[int],
                      histories: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """histories: one 1-D token tensor per user (lengths may differ) -> items, scores [B, beam] and,
    per user, how many tokens came from the cache."""
    if len(users) != len(histories):
        raise ValueError(f"recall_with_cache: {len(users)} users but {len(histories)} histories")
    dev = search.device
    histories = [h.to(dev) for h in histories]
    reused = [reusable_length(store.get(u), h) for u, h in zip(users, histories)]
    groups: dict[tuple[int, int], list[int]] = {}
    for row, (t0, h) in enumerate(zip(reused, histories)):
        groups.setdefault((t0, len(h)), []).append(row)
    items = torch.empty(len(users), search.beam, dtype=torch.long, device=dev)
    scores = torch.empty(len(users), search.beam, device=dev)
    for (t0, _), rows in groups.items():
        new = torch.stack([histories[r][t0:] for r in rows])                         # [G, T - T0]
        past = None
        if t0:
            entries = [store.get(users[r]) for r in rows]
            past = [(torch.cat([e.kv[i][0][:, :, :t0] for e in entries]),          # [G, hkv, T0, D]
                     torch.cat([e.kv[i][1][:, :, :t0] for e in entries])) for i in range(search.cfg.n_layer)]
        got, got_scores, kv = search.search(new, None, past)
        index = torch.tensor(rows, device=dev)
        items[index], scores[index] = got, got_scores
        for j, r in enumerate(rows):   # a copy per user, so the group's batch tensors can be freed
            store.put(users[r], CachedHistory(histories[r], [(k[j:j + 1].clone(), v[j:j + 1].clone()) for k, v in kv]))
    return items, scores, reused


class KVSlab:
    """The serving form of the user cache: up to `slots` users' histories (at most max_tokens each) in
    one preallocated tensor [slots, 2 (keys, values), L, hkv, max_tokens, D], least recently used slot
    reused first. Slot-major, so a batch's cached prefixes are one index_select (straight into a CUDA
    graph's static buffer: `gather(..., out=)`) and its new keys one index_copy_, whatever the layers.

    reuse_lengths: the cached lengths a request may start from: its common prefix with the slot is
    rounded down to the longest of them (0, a full prefill, below the shortest). A server passes the
    cached lengths it captured graphs for, so a prefix that happens to run a token longer (the first
    new token equal to the cached one) does not meet an uncaptured shape mid-traffic. None: any."""

    def __init__(self, search: FastBeamSearch, slots: int, max_tokens: int, reuse_lengths=None):
        if slots < 1 or max_tokens < 2:
            raise ConfigError(f"KVSlab slots={slots}, max_tokens={max_tokens}: need slots >= 1 and max_tokens >= 2")
        cfg = search.cfg
        self.kv = torch.zeros((slots, 2, cfg.n_layer, cfg.n_kv_head, max_tokens, cfg.head_dim),
                              device=search.device, dtype=search.dtype)
        self.tokens = np.full((slots, max_tokens), -1, np.int64)   # host copy: prefix matching stays on the CPU
        self.length = np.zeros(slots, np.int64)
        self.max_tokens, self.n_layer = max_tokens, cfg.n_layer
        allowed = None if reuse_lengths is None else sorted({int(x) for x in reuse_lengths} - {0})
        if allowed and (allowed[0] < 0 or allowed[-1] >= max_tokens):
            raise ConfigError(f"KVSlab reuse_lengths={allowed}: each must be in 1..{max_tokens - 1}")
        self.reuse_lengths = None if allowed is None else np.array(allowed, np.int64)
        self._slot: OrderedDict[int, int] = OrderedDict()
        self._free = list(range(slots))[::-1]

    def slots_for(self, users: list[int]) -> np.ndarray:
        """Each user's slot (a new one, taken from the least recently used user, when absent)."""
        out = np.empty(len(users), np.int64)
        for i, u in enumerate(users):
            slot = self._slot.get(u)
            if slot is None:
                slot = self._free.pop() if self._free else self._slot.popitem(last=False)[1]
                self.length[slot] = 0
                self._slot[u] = slot
            self._slot.move_to_end(u)
            out[i] = slot
        return out

    def common_prefix(self, slots: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """How many leading tokens of each history match its slot's (at most len - 1: the last token's
        hidden state feeds the first level, so it is always recomputed). One comparison per history
        length, not per row."""
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        out = np.zeros(len(slots), np.int64)
        for t in np.unique(lengths):
            rows = np.flatnonzero(lengths == t)
            n = np.minimum(self.length[slots[rows]], t - 1)                                # [r]
            w = min(int(t), self.max_tokens)
            differ = self.tokens[slots[rows], :w] != np.stack([histories[r][:w] for r in rows])  # [r, w]
            differ |= np.arange(w) >= n[:, None]                     # past what the slot covers
            out[rows] = np.where(differ.any(1), differ.argmax(1), n)
        return out

    def reusable(self, slots: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """The cached tokens each history starts from: its common prefix, rounded down to reuse_lengths."""
        common = self.common_prefix(slots, histories)
        if self.reuse_lengths is None:
            return common
        at = np.searchsorted(self.reuse_lengths, common, side="right") - 1
        return np.where(at >= 0, self.reuse_lengths[np.maximum(at, 0)], 0)

    def gather(self, slots: np.ndarray, t0: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """These slots' first t0 tokens: [B, 2, L, hkv, t0, D], written into `out` when given."""
        index = torch.from_numpy(slots).to(self.kv.device)
        return torch.index_select(self.kv[..., :t0, :], 0, index, out=out)

    @staticmethod
    def layers(kv: torch.Tensor) -> list:
        """[B, 2, L, hkv, T, D] -> per layer (k, v) [B, hkv, T, D] (views), as FastBeamSearch takes `past`."""
        return [(kv[:, 0, i], kv[:, 1, i]) for i in range(kv.shape[2])]

    @staticmethod
    def stacked(kv: list, t0: int) -> torch.Tensor:
        """Per layer (k, v) [B, hkv, T, D] of a whole history -> its tokens t0.. as [B, 2, L, hkv, T-t0, D]."""
        return torch.stack([torch.stack((k[:, :, t0:], v[:, :, t0:]), 1) for k, v in kv], 2)

    def past(self, slots: np.ndarray, t0: int) -> list:
        """Per layer (k, v) [B, hkv, t0, D] of these slots' first t0 tokens."""
        return self.layers(self.gather(slots, t0))

    def store(self, slots: np.ndarray, histories: list[np.ndarray], t0: int, new: torch.Tensor | list) -> None:
        """Write tokens t0.. of each history: `new` their keys [B, 2, L, hkv, T-t0, D] (`stacked`), or
        per layer (k, v) [B, hkv, T, D] of the whole history."""
        t = len(histories[0])
        if t > self.max_tokens:
            self.length[slots] = 0     # longer than a slot: not cached
            return
        if isinstance(new, list):
            new = self.stacked(new, t0)
        index = torch.from_numpy(slots).to(self.kv.device)
        self.kv[..., t0:t, :].index_copy_(0, index, new)
        self.tokens[slots, :t] = np.stack(histories)
        self.length[slots] = t
