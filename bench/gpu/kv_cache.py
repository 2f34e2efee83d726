"""User-behaviour KV cache reuse: a user's history is encoded once, and a later request (the same day
or the next) only prefills the behaviour tokens appended since.

`UserKVCache` is a bounded in-process LRU: user id -> the tokens encoded and their per-layer keys and
values. `recall_with_cache` looks every user up, reuses the longest common prefix of the stored tokens
and the new history (at least the last token is always recomputed, since its hidden state feeds the
first level's logits), runs `FastBeamSearch` once per group of users with the same cached and new
lengths (rows stay unpadded), and stores each user's whole history back. Keys before a position depend
only on the tokens up to it (causal attention, absolute rotary positions), so the result is the same
as a full prefill of the new history.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from common.typedconf import ConfigError
from bench.gpu.fast_beam import FastBeamSearch


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
