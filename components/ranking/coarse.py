"""Coarse ranking: a logistic model over the shared feature vector, cheap enough to score the
whole merged candidate set (~500) and keep the best ~100 for the fine ranker."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.ranking.torch_ranker import Inputs, PositionBias, TorchRanker


@dataclass(frozen=True)
class CoarseConfig:
    epochs: int = 3
    batch_size: int = 4096
    lr: float = 2e-2
    min_count: int = 1       # unused by the model (no id embeddings); kept for the shared loader
    hash_buckets: int = 1
    evict_days: int = 0
    seed: int = 0


class CoarseNet(nn.Module):
    def __init__(self, n_features: int):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.position = PositionBias()

    def forward(self, inp: Inputs) -> torch.Tensor:
        return self.linear(inp.x).squeeze(-1)                                       # [..., F] -> [...]


class CoarseRanker(TorchRanker):
    name = "coarse"
    config_cls = CoarseConfig

    def build_net(self, n_features: int) -> nn.Module:
        return CoarseNet(n_features)
