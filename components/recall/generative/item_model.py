"""Item-level generative model: the history is read one token per item, the next item's semantic id
is generated code by code by a small per-level head.

Why a second architecture beside the token-level `GPT`: reading L tokens per history item makes
sequences L times longer (81 tokens for 20 items at L = 4), so attention costs L^2 as much and the
CPU fits far fewer epochs in a budget. Here an item's input vector is the sum of its codes'
embeddings (new items get one from their ids alone, as before), the transformer runs over
1 + history items, and the id is generated from the last state: level l's logits come from a state
that has absorbed the codes chosen at levels < l (a residual MLP step per level), tied to the input
code embeddings. The probability of an item is the product of its levels' probabilities, each
normalised over the codes the trie allows after its prefix, in training and in beam search alike.
Beam search encodes each history once and then only runs the per-level head on the beams.

Data rows: 0 = padding, 1 = BOS, item i = i + 2 (right-padded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from components.recall.generative.beam import Trie
from components.recall.generative.model import Block, GPTConfig

PAD_ITEM, BOS_ITEM, ITEM0 = 0, 1, 2


@dataclass(frozen=True)
class CodeTables:
    """Per data value (0 pad, 1 BOS, i + 2 item i): its codes [N, L] and its trie node at each level
    [N, L] (nodes of pad/BOS/id-less rows are 0 and never used as targets); and the trie."""

    codes: torch.Tensor
    nodes: torch.Tensor
    trie: Trie

    @classmethod
    def build(cls, codes: np.ndarray, trie: Trie) -> "CodeTables":
        valid = codes[:, 0] >= 0
        c = np.where(valid[:, None], codes, 0).astype(np.int64)                      # [I, L]
        c = torch.from_numpy(np.concatenate([np.zeros((ITEM0, c.shape[1]), np.int64), c]))
        nodes = torch.zeros_like(c)
        dev = trie.children[0].device
        c = c.to(dev)
        nodes = nodes.to(dev)
        for level in range(c.shape[1] - 1):
            nxt = trie.children[level][nodes[:, level], c[:, level]]
            nodes[:, level + 1] = nxt.clamp(min=0)
        return cls(c, nodes, trie)

    def allowed(self, values: torch.Tensor, level: int) -> torch.Tensor:
        """values [...] data values -> [..., K] bool: codes the trie allows after their level-l prefix."""
        return self.trie.children[level][self.nodes[values, level]] >= 0


class ItemGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        L, K, d = cfg.n_levels, cfg.codebook_size, cfg.d_model
        self.code = nn.Embedding(L * K, d)                 # input and output code embeddings (tied)
        self.prefix = nn.Embedding(L * K, d)               # a chosen code's effect on the next level's state
        self.code_bias = nn.Parameter(torch.zeros(L, K))
        self.bos = nn.Parameter(torch.zeros(d))
        # Items known at fit time may also carry their own input vector (as SASRec's): items that
        # arrive later have none and are read from their codes alone.
        self.item = nn.Embedding(ITEM0 + cfg.n_items, d) if cfg.item_embedding else None
        self.pos = nn.Embedding(cfg.max_items + 2, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.level_ln = nn.ModuleList([nn.LayerNorm(d) for _ in range(L - 1)])
        self.level_mlp = nn.ModuleList([nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                                        for _ in range(L - 1)])
        self.out_ln = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * max(cfg.n_layer, 1)))
        nn.init.normal_(self.code.weight, std=d ** -0.5)
        nn.init.normal_(self.bos, std=d ** -0.5)
        if self.item is not None:
            nn.init.normal_(self.item.weight, std=d ** -0.5)

    def encode(self, x: torch.Tensor, tables: CodeTables) -> torch.Tensor:
        """x [B, T] right-padded data values starting with BOS -> causal states [B, T, C]."""
        L, K = self.config.n_levels, self.config.codebook_size
        offs = torch.arange(L, device=x.device) * K
        e = self.code(tables.codes[x] + offs).sum(2)                                 # [B, T, C]
        if self.item is not None:
            known = x < self.item.num_embeddings
            e = e + self.item(x.clamp(max=self.item.num_embeddings - 1)) * known[..., None]
        e = torch.where((x == BOS_ITEM)[..., None], self.bos, e)
        e = e.masked_fill((x == PAD_ITEM)[..., None], 0.0)
        t = x.shape[1]
        h = self.drop(e + self.pos(torch.arange(t, device=x.device)))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[None, None]  # pads sit after
        for block in self.blocks:
            h, _ = block(h, mask, None)
        return self.ln_f(h)

    def logits(self, z: torch.Tensor, level: int) -> torch.Tensor:
        """State z [..., C] -> level's code logits [..., K]."""
        K = self.config.codebook_size
        w = self.code.weight[level * K: (level + 1) * K]                            # [K, C]
        return self.out_ln(z) @ w.T + self.code_bias[level]

    def step(self, z: torch.Tensor, code: torch.Tensor, level: int) -> torch.Tensor:
        """The state for level + 1 after choosing `code` [...] at `level`: z [..., C] -> [..., C]."""
        u = z + self.prefix(code + level * self.config.codebook_size)
        return u + self.level_mlp[level](self.level_ln[level](u))


def _masked_logp(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float().masked_fill(~allowed, float("-inf")), dim=-1)


def _id_nll(model: ItemGPT, z: torch.Tensor, target: torch.Tensor, tables: CodeTables) -> torch.Tensor:
    """NLL of each target item's id, summed over its levels (each trie-normalised), given the states
    that predict it: z [N, C], target [N] data values -> [N]."""
    codes = tables.codes[target]                                                     # [N, L]
    nll = z.new_zeros(len(target))
    for level in range(model.config.n_levels):
        logp = _masked_logp(model.logits(z, level), tables.allowed(target, level))   # [N, K]
        nll = nll - logp.gather(1, codes[:, level: level + 1])[:, 0]
        if level + 1 < model.config.n_levels:
            z = model.step(z, codes[:, level], level)
    return nll


def item_loss(model: ItemGPT, x: torch.Tensor, tables: CodeTables) -> torch.Tensor:
    """Summed next-item NLL (sum over levels, trie-normalised) of right-padded rows x [B, T]."""
    h = model.encode(x[:, :-1], tables)                                              # [B, T-1, C]
    target = x[:, 1:]                                                                # [B, T-1]
    keep = target >= ITEM0
    return _id_nll(model, h[keep], target[keep], tables).sum()


def item_target_nll(model: ItemGPT, rows: np.ndarray, tables: CodeTables, batch: int = 512) -> float:
    """Mean NLL of each row's last item given the items before it: rows [N, T] right-padded data."""
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    x_all = torch.from_numpy(rows)
    with torch.no_grad():
        for lo in range(0, len(rows), batch):
            x = x_all[lo: lo + batch].to(dev)
            last = (x != PAD_ITEM).sum(1) - 1                                        # [B]
            h = model.encode(x, tables)                                              # [B, T, C]
            z = h[torch.arange(len(x), device=dev), last - 1]                        # [B, C]
            tgt = x[torch.arange(len(x), device=dev), last]                          # [B]
            total += float(_id_nll(model, z, tgt, tables).sum())
    return total / max(len(rows), 1)


def item_rows(histories: Sequence[np.ndarray], codes: np.ndarray, max_items: int) -> np.ndarray:
    """Chronological item histories -> [B, 1 + max_items] right-padded data rows (BOS, items + 2).
    Items without an id are skipped; only the last max_items are kept."""
    out = np.zeros((len(histories), 1 + max_items), np.int64)
    out[:, 0] = BOS_ITEM
    for i, hist in enumerate(histories):
        hist = np.asarray(hist, np.int64)
        hist = hist[(hist >= 0) & (hist < len(codes))]
        hist = hist[codes[hist, 0] >= 0][-max_items:]
        out[i, 1: 1 + len(hist)] = hist + ITEM0
    return out


def item_windows(sequences: Sequence[np.ndarray], codes: np.ndarray, max_items: int) -> np.ndarray:
    """Users' sequences cut into windows of max_items + 1 from the newest end, as the token model's
    training_sequences: -> [N, 2 + max_items] rows whose every item is a next-item target."""
    windows = []
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        seq = seq[codes[seq, 0] >= 0]
        for end in range(len(seq), 1, -max_items):
            windows.append(seq[max(0, end - max_items - 1): end])
    return item_rows(windows, codes, max_items + 1)


@torch.no_grad()
def item_beam_search(model: ItemGPT, rows: torch.Tensor, tables: CodeTables,
                     beam: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best `beam` items per history: rows [B, T] right-padded data rows (BOS + history) -> items
    [B, beam] (-1 where fewer valid ids) and log-probability scores [B, beam], best first."""
    model.eval()
    dev = rows.device
    b = rows.shape[0]
    last = (rows != PAD_ITEM).sum(1) - 1                                             # [B]
    z = model.encode(rows, tables)[torch.arange(b, device=dev), last][:, None]       # [B, 1, C]
    node = torch.zeros(b, 1, dtype=torch.long, device=dev)                           # [B, W]
    score = torch.zeros(b, 1, device=dev)
    rowsel = torch.arange(b, device=dev)[:, None]
    n_levels = len(tables.trie.children)
    for level in range(n_levels):
        w = node.shape[1]
        child = tables.trie.children[level][node]                                    # [B, W, K]
        k_codes = child.shape[2]
        logp = _masked_logp(model.logits(z, level), child >= 0)
        logp = logp.masked_fill(child < 0, float("-inf"))                            # NaN rows -> -inf
        total = (score[:, :, None] + logp).view(b, w * k_codes)
        keep = min(beam, w * k_codes)
        score, flat = total.topk(keep, dim=1)                                        # [B, W']
        parent, code = flat // k_codes, flat % k_codes
        node = child.view(b, w * k_codes)[rowsel, flat]
        node = torch.where(torch.isfinite(score), node, torch.zeros_like(node))
        if level + 1 == n_levels:
            return torch.where(torch.isfinite(score), node, torch.full_like(node, -1)), score
        z = model.step(z[rowsel, parent], code, level)                               # [B, W', C]
    raise AssertionError("unreachable: the trie has at least one level")
