"""DeepFM: a factorisation machine over field embeddings (item, category, each dense feature)
plus a deep MLP over the same embeddings, summed into one logit."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.ranking.ids import check_knobs
from components.ranking.torch_ranker import Inputs, PositionBias, TorchRanker


@dataclass(frozen=True)
class DeepFMConfig:
    dim: int = 8
    hidden: int = 32
    epochs: int = 3
    batch_size: int = 2048
    lr: float = 1e-2
    min_count: int = 2       # impressions an item needs in the sample window for its own embedding
    hash_buckets: int = 64   # rows shared by the other items
    evict_days: int = 0      # an item whose last impression is more than this many days old loses its row (0: never)
    seed: int = 0

    def validate(self, where: str) -> None:
        check_knobs(where, self.min_count, self.hash_buckets, self.evict_days)


class DeepFMNet(nn.Module):
    def __init__(self, n_features: int, n_ids: int, n_categories: int, cfg: DeepFMConfig):
        super().__init__()
        self.item = nn.Embedding(n_ids, cfg.dim)
        self.category = nn.Embedding(n_categories, cfg.dim)
        self.dense = nn.Parameter(torch.randn(n_features, cfg.dim) * 0.01)      # a vector per dense feature
        self.linear = nn.Linear(n_features, 1)
        self.item_bias = nn.Embedding(n_ids, 1)
        nn.init.zeros_(self.item_bias.weight)
        n_fields = n_features + 2
        self.deep = nn.Sequential(nn.Linear(n_fields * cfg.dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
        self.position = PositionBias()

    def forward(self, inp: Inputs) -> torch.Tensor:
        # fields: [..., n_fields, dim]
        dense = inp.x[..., None] * self.dense                                       # [..., F, k]
        fields = torch.cat([self.item(inp.item)[..., None, :], self.category(inp.category)[..., None, :],
                            dense], dim=-2)                                         # [..., F+2, k]
        # FM second order: 0.5 * ((sum v)^2 - sum v^2), summed over the embedding axis
        fm = 0.5 * (fields.sum(-2).pow(2) - fields.pow(2).sum(-2)).sum(-1)          # [...]
        first = self.linear(inp.x).squeeze(-1) + self.item_bias(inp.item).squeeze(-1)
        deep = self.deep(fields.flatten(-2)).squeeze(-1)                            # [...]
        return first + fm + deep


class DeepFMRanker(TorchRanker):
    name = "deepfm"
    config_cls = DeepFMConfig

    def build_net(self, n_features: int) -> nn.Module:
        return DeepFMNet(n_features, self.ids_.size, self.n_categories_, self.config)
