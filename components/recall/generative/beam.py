"""Constrained beam search: a prefix trie of the catalogue's ids as dense tensors, batched, cached."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from components.recall.generative.model import GPT, PAD, SPECIAL, KVCache, prefix_mask


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


OwnCache = list[tuple[torch.Tensor, torch.Tensor]]   # per layer: a beam's own keys, values [B, W, h, t, C/h]


def _extend(model: GPT, tok: torch.Tensor, pos: torch.Tensor, prefix: KVCache, prefix_valid: torch.Tensor,
            own: OwnCache | None, parent: torch.Tensor) -> tuple[torch.Tensor, OwnCache]:
    """Feed each beam's newest token: tok, pos [B, W]; prefix per layer (k, v) [B, h, S, C/h], the history's
    cache shared by all of a row's beams; own: the beams' generated keys before this step, rows picked by
    parent [B, W]. Returns final states [B, W, C] and the beams' own cache with this token added.

    Cascade attention: the beams of a row attend to the one history cache instead of each carrying a
    copy of it, so a step costs W x S dot products per row and never copies the S history keys.
    """
    b, w = tok.shape
    rows = torch.arange(b, device=tok.device)[:, None]
    x = model.tok(tok) + model.pos(pos)                                              # [B, W, C]
    c = x.shape[2]
    bias = torch.zeros(prefix_valid.shape, dtype=x.dtype, device=x.device)
    bias = bias.masked_fill(~prefix_valid, float("-inf"))[:, None, None, :]          # [B, 1, 1, S]
    new_own = []
    for i, block in enumerate(model.blocks):
        nh = block.attn.n_head
        q, k, v = block.attn.qkv(block.ln1(x)).split(c, dim=2)                       # 3 x [B, W, C]
        q, k, v = (z.view(b, w, nh, c // nh) for z in (q, k, v))                     # [B, W, h, C/h]
        k, v = k[:, :, :, None], v[:, :, :, None]                                    # [B, W, h, 1, C/h]
        if own is not None:
            k = torch.cat([own[i][0][rows, parent], k], 3)                           # [B, W, h, t, C/h]
            v = torch.cat([own[i][1][rows, parent], v], 3)
        new_own.append((k, v))
        pk, pv = prefix[i]                                                           # [B, h, S, C/h]
        scale = 1.0 / math.sqrt(c // nh)
        s_pre = torch.einsum("bwhd,bhsd->bhws", q, pk) * scale + bias                # [B, h, W, S]
        s_own = torch.einsum("bwhd,bwhtd->bhwt", q, k) * scale                       # [B, h, W, t]
        att = torch.softmax(torch.cat([s_pre, s_own], 3), dim=3)                     # [B, h, W, S+t]
        n_pre = s_pre.shape[3]
        y = (torch.einsum("bhws,bhsd->bwhd", att[..., :n_pre], pv)
             + torch.einsum("bhwt,bwhtd->bwhd", att[..., n_pre:], v))                # [B, W, h, C/h]
        x = x + block.attn.proj(y.reshape(b, w, c))
        x = x + block.mlp(block.ln2(x))
    return model.ln_f(x), new_own


@torch.no_grad()
def beam_search(model: GPT, history: torch.Tensor, trie: Trie, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best `beam` catalogue items per row: history [B, T] left-padded tokens starting with BOS ->
    items [B, beam] (-1 where fewer valid ids) and log-probability scores [B, beam], best first.

    Each level's choice is normalised over that level's codes that the trie allows after the beam's prefix."""
    model.eval()
    dev = history.device
    b = history.shape[0]
    pos, mask = prefix_mask(history)
    h, prefix = model.hidden(history, pos, mask)                                     # [B, T, C]
    h = h[:, -1:]                                                                    # [B, 1, C] left-padded
    prefix_valid = history != PAD                                                    # [B, S]
    lengths = prefix_valid.sum(1)[:, None]                                           # [B, 1]
    node = torch.zeros(b, 1, dtype=torch.long, device=dev)                           # [B, W] trie nodes
    score = torch.zeros(b, 1, device=dev)                                            # [B, W]
    rows = torch.arange(b, device=dev)[:, None]
    own = None
    n_levels = len(trie.children)
    for level in range(n_levels):
        w = node.shape[1]
        k_codes = trie.children[level].shape[1]
        child = trie.children[level][node]                                           # [B, W, K]
        level_logits = model.level_logits(h, level).float()                          # [B, W, K]
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
        tok = SPECIAL + level * model.config.codebook_size + code                    # [B, W']
        h, own = _extend(model, tok, (lengths + level).expand(-1, keep), prefix, prefix_valid, own, parent)
    raise AssertionError("unreachable: the trie has at least one level")
