"""Constrained beam search: a prefix trie of the catalogue's ids as dense tensors, batched, cached."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from components.recall.generative.model import GPT, PAD, SPECIAL, prefix_mask


@dataclass(frozen=True)
class Trie:
    """children[l][node, code] = the node reached at level l + 1 (an item id after the last level), -1 if no
    item has that prefix. Node 0 of level 0 is the root. Invalid continuations are masked with these
    tables in one tensor op per step."""

    children: list[torch.Tensor]   # L x [N_l, K] int64

    @classmethod
    def build(cls, codes: np.ndarray, codebook_size: int) -> "Trie":
        """codes [I, L] (-1 rows: items without an id, left out)."""
        items = np.nonzero(codes[:, 0] >= 0)[0]
        codes = codes[items]
        n_levels = codes.shape[1]
        node = np.zeros(len(items), np.int64)                                        # [I] node at level 0
        children = []
        for level in range(n_levels):
            n_nodes = int(node.max()) + 1 if len(node) else 1
            table = np.full((n_nodes, codebook_size), -1, np.int64)                  # [N_l, K]
            if level + 1 < n_levels:
                _, nxt = np.unique(codes[:, : level + 1], axis=0, return_inverse=True)
                nxt = nxt.ravel().astype(np.int64)
            else:
                nxt = items.astype(np.int64)
            table[node, codes[:, level]] = nxt
            children.append(torch.from_numpy(table))
            node = nxt
        return cls(children)

    def to(self, device: torch.device) -> "Trie":
        return Trie([c.to(device) for c in self.children])


@torch.no_grad()
def beam_search(model: GPT, history: torch.Tensor, trie: Trie, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best `beam` catalogue items per row: history [B, T] left-padded tokens starting with BOS ->
    items [B, beam] (-1 where fewer valid ids) and log-probability scores [B, beam], best first."""
    model.eval()
    cfg = model.config
    k_codes, dev = cfg.codebook_size, history.device
    b = history.shape[0]
    pos, mask = prefix_mask(history)
    logits, cache = model(history, pos, mask)                                        # [B, T, V]
    logits = logits[:, -1:, :]                                                       # [B, 1, V]
    lengths = (history != PAD).sum(1)[:, None]                                       # [B, W]
    key_valid = (history != PAD)[:, None, :]                                         # [B, W, S]
    node = torch.zeros(b, 1, dtype=torch.long, device=dev)                           # [B, W] trie nodes
    score = torch.zeros(b, 1, device=dev)                                            # [B, W]
    rows = torch.arange(b, device=dev)[:, None]
    n_levels = len(trie.children)
    for level in range(n_levels):
        w = node.shape[1]
        lo = SPECIAL + level * k_codes
        child = trie.children[level][node]                                           # [B, W, K]
        level_logits = logits[:, :, lo: lo + k_codes].float()                        # [B, W, K]
        level_logits = level_logits.masked_fill(child < 0, float("-inf"))
        # A beam with no valid continuation gives NaN here; masking again turns it into -inf.
        logp = torch.log_softmax(level_logits, dim=-1).masked_fill(child < 0, float("-inf"))  # [B, W, K]
        total = (score[:, :, None] + logp).view(b, w * k_codes)                       # [B, W*K]
        keep = min(beam, w * k_codes)
        score, flat = total.topk(keep, dim=1)                                        # [B, W']
        parent, code = flat // k_codes, flat % k_codes                               # [B, W']
        node = child.view(b, w * k_codes)[rows, flat]                                # [B, W']
        node = torch.where(torch.isfinite(score), node, torch.zeros_like(node))
        if level + 1 == n_levels:
            items = torch.where(torch.isfinite(score), node, torch.full_like(node, -1))
            return items, score
        # Reorder the cache to the surviving beams and feed the chosen codes.
        src = (rows * w + parent).reshape(-1)                                        # [B*W']
        cache = [(k[src], v[src]) for k, v in cache]                                  # [B*W', h, S, d]
        lengths = lengths[rows, parent]                                              # [B, W']
        key_valid = torch.cat([key_valid[rows, parent],
                               torch.ones(b, keep, 1, dtype=torch.bool, device=dev)], 2)  # [B, W', S+1]
        tok = (lo + code).reshape(-1, 1)                                             # [B*W', 1]
        step_pos = (lengths + level).reshape(-1, 1)                                  # [B*W', 1]
        step_mask = key_valid.reshape(b * keep, 1, 1, -1)                            # [B*W', 1, 1, S+1]
        logits, cache = model(tok, step_pos, step_mask, cache)                       # [B*W', 1, V]
        logits = logits.view(b, keep, -1)                                            # [B, W', V]
    raise AssertionError("unreachable: the trie has at least one level")
