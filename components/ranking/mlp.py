"""A small MLP ranker over the shared feature vector, with a position-bias term for training."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.typedconf import require
from components.ranking.torch_ranker import Inputs, PositionBias, TorchRanker


@dataclass(frozen=True)
class MLPConfig:
    hidden: int = 32
    epochs: int = 5
    batch_size: int = 4096
    lr: float = 1e-2
    seed: int = 0

    def validate(self, where: str) -> None:
        for name in ("hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            require(value >= 1, f"{where}.{name}", f"must be at least 1, got {value}")
        require(self.seed >= 0, f"{where}.seed", f"must be >= 0, got {self.seed}")
        require(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")


class MLPNet(nn.Module):
    """logit = mlp(features) + bias[position]: the position term soaks up how likely a slot is
    to be looked at, so the MLP learns relevance alone (the PAL trick). Serving uses position 0."""

    def __init__(self, n_features: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.position = PositionBias()

    def forward(self, inp: Inputs) -> torch.Tensor:
        return self.mlp(inp.x).squeeze(-1)                                          # [..., F] -> [...]


class MLPRanker(TorchRanker):
    name = "mlp"
    config_cls = MLPConfig
    uses_ids = False
    top_slot_bias = True

    def build_net(self, n_features: int) -> nn.Module:
        return MLPNet(n_features, self.config.hidden)

    def predict(self, x: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Click probability for feature rows [..., F] shown at `position` [...] (default top)."""
        inp = Inputs(x=torch.from_numpy(((x - self.mean_) / self.std_).astype(np.float32)),
                     item=None, category=None, history=None)
        pos = torch.zeros(inp.x.shape[:-1], dtype=torch.long) if position is None else torch.from_numpy(position)
        with torch.no_grad():
            return torch.sigmoid(self.net_(inp) + self.net_.position(pos)).numpy()
