"""A small decoder-only transformer over semantic-id tokens, with a KV cache for beam search.

Decoder-only (as JD's Qwen2-based model) rather than TIGER's encoder-decoder: the history and the
id being generated are one token stream, so a single stack does both, every position of a training
sequence is a next-token example (one pass trains all of a user's next items, as SASRec does), and
serving caches the history once and then extends it token by token.

Token layout: 0 = padding, 1 = BOS, then level l's code c is 2 + l * K + c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

PAD, BOS, SPECIAL = 0, 1, 2

KVCache = list[tuple[torch.Tensor, torch.Tensor]]    # per layer: keys, values [B, h, T, d/h]


@dataclass(frozen=True)
class GPTConfig:
    n_levels: int = 4          # tokens per item (quantised levels + the unique level)
    codebook_size: int = 256   # codes per level
    max_items: int = 20        # history items the model reads
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.1
    arch: str = "tokens"       # "tokens": L tokens per history item; "items": one (item_model.py)
    item_embedding: bool = False   # items arch: add a learned per-item vector to its codes' sum on input
    n_items: int = 0           # items known at fit time (set by the channel; sizes the per-item vectors)

    @property
    def vocab_size(self) -> int:
        return SPECIAL + self.n_levels * self.codebook_size

    @property
    def block_size(self) -> int:
        return 1 + (self.max_items + 1) * self.n_levels     # BOS, history, the generated item


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple]:
        b, t, c = x.shape                                                            # [B, T, C]
        q, k, v = self.qkv(x).split(c, dim=2)                                        # 3 x [B, T, C]
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # [B, h, T, C/h]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)   # [B, h, S+T, C/h]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # [B, h, T, C/h]
        y = y.transpose(1, 2).contiguous().view(b, t, c)                             # [B, T, C]
        return self.proj(y), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past) -> tuple[torch.Tensor, tuple]:
        a, kv = self.attn(self.ln1(x), mask, past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=PAD)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight                                           # weight tying
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def hidden(self, idx: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
               cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx, pos [B, T]; mask [B, 1, T, S+T] bool (True = may attend) -> final states [B, T, C], cache."""
        x = self.drop(self.tok(idx) + self.pos(pos))                                 # [B, T, C]
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.ln_f(x), new_cache

    def forward(self, idx: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """idx, pos [B, T]; mask [B, 1, T, S+T] bool (True = may attend) -> logits [B, T, V], cache."""
        h, new_cache = self.hidden(idx, pos, mask, cache)
        return self.head(h), new_cache                                               # [B, T, V]

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Logits over level `level`'s codes only: h [..., C] -> [..., K]. An item's token at a level is
        always one of that level's codes, so training and beam search normalise over those alone."""
        lo = SPECIAL + level * self.config.codebook_size
        return h @ self.head.weight[lo: lo + self.config.codebook_size].T


def prefix_mask(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For left-padded rows idx [B, T]: positions [B, T] from each row's first token, and the
    causal mask [B, 1, T, T] over real tokens (a padding query sees itself so no row is empty)."""
    valid = idx != PAD                                                               # [B, T]
    pos = (valid.cumsum(1) - 1).clamp(min=0)                                         # [B, T]
    t = idx.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()           # [T, T]
    eye = torch.eye(t, dtype=torch.bool, device=idx.device)
    mask = (causal & valid[:, None, :]) | eye                                        # [B, T, T]
    return pos, mask[:, None]
