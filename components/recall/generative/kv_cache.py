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
    one preallocated key tensor and one value tensor [L, slots, hkv, max_tokens, D], least recently
    used slot reused first. A batch's cached prefixes are then one gather, not a concatenation of
    per-user tensors per layer, and a CUDA graph reads them from the same static buffers every time."""

    def __init__(self, search: FastBeamSearch, slots: int, max_tokens: int):
        if slots < 1 or max_tokens < 2:
            raise ConfigError(f"KVSlab slots={slots}, max_tokens={max_tokens}: need slots >= 1 and max_tokens >= 2")
        cfg = search.cfg
        shape = (cfg.n_layer, slots, cfg.n_kv_head, max_tokens, cfg.head_dim)
        self.k = torch.zeros(shape, device=search.device, dtype=search.dtype)
        self.v = torch.zeros(shape, device=search.device, dtype=search.dtype)
        self.tokens = np.full((slots, max_tokens), -1, np.int64)   # host copy: prefix matching stays on the CPU
        self.length = np.zeros(slots, np.int64)
        self.max_tokens = max_tokens
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

    def reusable(self, slots: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """How many leading tokens of each history its slot's keys cover (at most len - 1)."""
        out = np.zeros(len(slots), np.int64)
        for i, (s, h) in enumerate(zip(slots, histories)):
            n = min(int(self.length[s]), len(h) - 1)
            differ = np.nonzero(self.tokens[s, :n] != h[:n])[0]
            out[i] = n if len(differ) == 0 else differ[0]
        return out

    def past(self, slots: np.ndarray, t0: int) -> list:
        """Per layer (k, v) [B, hkv, t0, D] of these slots' first t0 tokens."""
        index = torch.from_numpy(slots).to(self.k.device)
        k, v = self.k[:, index, :, :t0], self.v[:, index, :, :t0]                      # [L, B, hkv, t0, D]
        return list(zip(k.unbind(0), v.unbind(0)))

    def store(self, slots: np.ndarray, histories: list[np.ndarray], t0: int, kv: list) -> None:
        """Write tokens t0.. of each history (their keys: kv per layer [B, hkv, T, D] of the whole history)."""
        t = len(histories[0])
        if t > self.max_tokens:
            self.length[slots] = 0     # longer than a slot: not cached
            return
        index = torch.from_numpy(slots).to(self.k.device)
        new_k = torch.stack([k[:, :, t0:t] for k, _ in kv])                              # [L, B, hkv, T-t0, D]
        new_v = torch.stack([v[:, :, t0:t] for _, v in kv])
        self.k[:, index, :, t0:t] = new_k
        self.v[:, index, :, t0:t] = new_v
        self.tokens[slots, :t] = np.stack(histories)
        self.length[slots] = t
