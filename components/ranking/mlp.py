"""A small MLP ranker over the shared feature vector, with a position-bias term for training."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from common.typedconf import require
from components.features.definitions import FEATURES
from components.ranking.base import Samples, serving_features
from components.types import UserBatch

MAX_POSITION = 100


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
        self.position_bias = nn.Embedding(MAX_POSITION, 1)
        nn.init.zeros_(self.position_bias.weight)

    def forward(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        # x: [..., F], position: [...] -> logit [...]
        return self.mlp(x).squeeze(-1) + self.position_bias(position).squeeze(-1)


class MLPRanker:
    name = "mlp"

    def __init__(self, config: MLPConfig = MLPConfig()):
        self.config = config

    def fit(self, samples: Samples) -> Self:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.mean_ = samples.x.mean(axis=0)
        std = samples.x.std(axis=0)
        self.std_ = np.where(std > 1e-6, std, 1.0)   # a constant feature stays at 0
        x = torch.from_numpy((samples.x - self.mean_) / self.std_).float()           # [N, F]
        pos = torch.from_numpy(np.minimum(samples.position, MAX_POSITION - 1))         # [N]
        y = torch.from_numpy(samples.label)                                           # [N]
        self.net_ = MLPNet(x.shape[1], cfg.hidden)
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr)
        self.losses_ = []
        for _ in range(cfg.epochs):
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for start in range(0, len(x), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = nn.functional.binary_cross_entropy_with_logits(self.net_(x[idx], pos[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.losses_.append(total / max(len(x), 1))
        self.net_.eval()
        return self

    def predict(self, x: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Click probability for feature rows [..., F] shown at `position` [...] (default top)."""
        z = torch.from_numpy(((x - self.mean_) / self.std_).astype(np.float32))
        pos = torch.zeros(z.shape[:-1], dtype=torch.long) if position is None else \
            torch.from_numpy(np.minimum(position, MAX_POSITION - 1))
        with torch.no_grad():
            return torch.sigmoid(self.net_(z, pos)).numpy()

    def predict_samples(self, samples: Samples) -> np.ndarray:
        return self.predict(samples.x)

    def score(self, users: UserBatch, items: np.ndarray) -> np.ndarray:
        scores = self.predict(serving_features(users, items))                         # [B, n]
        return np.where(items >= 0, scores, -np.inf)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.config), "features": [f.name for f in FEATURES],
                    "state": self.net_.state_dict(), "mean": torch.from_numpy(self.mean_),
                    "std": torch.from_numpy(self.std_)}, path / "model.pt")

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            ckpt = torch.load(path / "model.pt", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"cannot load ranker from {path}: {exc}; re-run training for that day") from None
        names = [f.name for f in FEATURES]
        if ckpt["features"] != names:
            raise ValueError(f"{path}: trained on features {ckpt['features']}, this code serves {names}; retrain")
        obj = cls(MLPConfig(**ckpt["config"]))
        obj.mean_, obj.std_ = ckpt["mean"].numpy(), ckpt["std"].numpy()
        obj.net_ = MLPNet(len(names), obj.config.hidden)
        obj.net_.load_state_dict(ckpt["state"])
        obj.net_.eval()
        return obj
