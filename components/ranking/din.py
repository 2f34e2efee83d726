"""DIN (Deep Interest Network): target attention weighs each clicked item of the history by its
relevance to the candidate, so a user's interest is read per candidate, not averaged once."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.ranking.ids import check_knobs
from components.ranking.torch_ranker import Inputs, PositionBias, TorchRanker


@dataclass(frozen=True)
class DINConfig:
    dim: int = 8
    hidden: int = 32
    attention_hidden: int = 16
    history: int = 10        # recent clicks attended over
    epochs: int = 3
    batch_size: int = 2048
    lr: float = 1e-2
    min_count: int = 2       # impressions an item needs in the sample window for its own embedding
    hash_buckets: int = 64   # rows shared by the other items
    evict_days: int = 0      # an item whose last impression is more than this many days old loses its row (0: never)
    seed: int = 0

    def validate(self, where: str) -> None:
        check_knobs(where, self.min_count, self.hash_buckets, self.evict_days)


class DINNet(nn.Module):
    def __init__(self, n_features: int, n_ids: int, n_categories: int, cfg: DINConfig):
        super().__init__()
        self.history = cfg.history
        self.padding = n_ids - 1
        self.item = nn.Embedding(n_ids, cfg.dim, padding_idx=self.padding)
        self.category = nn.Embedding(n_categories, cfg.dim)
        self.attention = nn.Sequential(nn.Linear(4 * cfg.dim, cfg.attention_hidden), nn.ReLU(),
                                       nn.Linear(cfg.attention_hidden, 1))
        self.mlp = nn.Sequential(nn.Linear(n_features + 3 * cfg.dim, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, 1))
        self.position = PositionBias()

    def forward(self, inp: Inputs) -> torch.Tensor:
        target = self.item(inp.item)                                                # [..., k]
        hist_ids = inp.history[..., : self.history]                                 # [..., H]
        hist = self.item(hist_ids)                                                  # [..., H, k]
        t = target[..., None, :].expand_as(hist)                                    # [..., H, k]
        w = self.attention(torch.cat([hist, t, hist - t, hist * t], dim=-1)).squeeze(-1)  # [..., H]
        # DIN keeps the attention weights unnormalised (no softmax), so intensity of interest counts.
        w = w * (hist_ids != self.padding)
        interest = (w[..., None] * hist).sum(-2)                                    # [..., k]
        z = torch.cat([inp.x, target, interest, self.category(inp.category)], dim=-1)
        return self.mlp(z).squeeze(-1)                                              # [...]


class DINRanker(TorchRanker):
    name = "din"
    config_cls = DINConfig

    def build_net(self, n_features: int) -> nn.Module:
        return DINNet(n_features, self.ids_.size, self.n_categories_, self.config)
