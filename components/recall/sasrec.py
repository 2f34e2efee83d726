"""SASRec-style sequential recall: causal self-attention over the click history predicts the
next click, trained with a full-softmax cross-entropy over the catalogue (tied item embeddings)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from common.typedconf import ConfigError, require
from components.recall.base import ModelFileError, why
from components.recall.history import chronological, click_sequences
from components.types import Candidates, TrainData, UserBatch, top_k

log_ = logging.getLogger(__name__)
MASKED = -1e9   # large but finite, as in the original SASRec


@dataclass(frozen=True)
class SASRecConfig:
    # The settings that reach the published SASRec figure on Amazon Beauty (bench.beauty_traditional).
    # Fewer epochs or a narrower model leave it recalling mostly popular items: at 3 epochs and
    # dim 32 the small loop's SASRec put 38 distinct items in 2,097 users' top 10 (item-CF: 2,164).
    dim: int = 64
    heads: int = 2
    layers: int = 2
    max_len: int = 20
    dropout: float = 0.3
    window_days: int = 30
    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"          # where training runs ("cuda" for long offline runs); serving is on CPU
    budget_s: float = 0.0        # stop training after this many seconds (checked every batch); 0: no cap
    # > 0: a day whose previous day left a model of the same shape starts from its weights (new
    # items get fresh rows) and trains this many epochs instead of `epochs`, as daily production
    # retraining does; the first day, or a changed shape, trains from scratch.
    warm_epochs: int = 0

    def validate(self, where: str) -> None:
        for name in ("dim", "heads", "layers", "max_len", "epochs", "batch_size"):
            value = getattr(self, name)
            require(value >= 1, f"{where}.{name}", f"must be at least 1, got {value}")
        require(self.dim % self.heads == 0, f"{where}.dim", f"{self.dim} is not divisible by heads={self.heads}")
        require(self.warm_epochs >= 0, f"{where}.warm_epochs", f"must be 0 (off) or more, got {self.warm_epochs}")


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.n_items, self.heads = n_items, cfg.heads
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=n_items)         # last row: padding
        # Tied output weights: at torch's N(0, 1) default the initial logits have a spread of
        # sqrt(dim) and the first loss is ~50 nats where a uniform guess gives log(I) (~9); start
        # at std dim^-1/2 so training begins near uniform (the input keeps its sqrt(dim) scale).
        nn.init.normal_(self.item.weight, std=cfg.dim ** -0.5)
        with torch.no_grad():
            self.item.weight[n_items].zero_()
        self.position = nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        # seq: [B, L] item ids oldest first, -1 left padding -> hidden states [B, L, d]
        b, length = seq.shape
        pad = seq < 0                                                               # [B, L]
        ids = torch.where(pad, torch.full_like(seq, self.n_items), seq)
        x = self.item(ids) * math.sqrt(self.item.embedding_dim) + self.position.weight[None, :length]
        x = self.dropout(x) * (~pad)[..., None]                                     # [B, L, d]
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), diagonal=1)
        # A padded query may see itself, so no row is fully masked (fully masked rows turn to
        # NaN in torch's fused inference path and spread through the values of the next layer).
        self_ = torch.eye(length, dtype=torch.bool, device=seq.device)[None]
        blocked = future[None] | (pad[:, None, :] & ~self_)                         # [B, L, L]
        mask = torch.zeros(blocked.shape, device=seq.device).masked_fill(blocked, MASKED)
        mask = mask.repeat_interleave(self.heads, dim=0)                            # [B*heads, L, L]
        return self.norm(self.encoder(x, mask=mask))                                # [B, L, d]

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [..., d] -> logits over real items [..., I]
        return hidden @ self.item.weight[: self.n_items].T


def training_windows(seqs: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets [N, max_len], left-padded with -1; long sequences are cut into
    consecutive windows so every click is a target once."""
    xs, ys = [], []
    for seq in seqs:
        for end in range(len(seq), 1, -max_len):
            chunk = seq[max(0, end - max_len - 1):end]
            x, y = chunk[:-1], chunk[1:]
            xs.append(np.pad(x, (max_len - len(x), 0), constant_values=-1))
            ys.append(np.pad(y, (max_len - len(y), 0), constant_values=-1))
    if not xs:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.stack(xs).astype(np.int64), np.stack(ys).astype(np.int64)


def training_device(name: str, setting: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting}: {name!r} is not a torch device; use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}: {name!r} asked for, but no CUDA device is available; use 'cpu'")
    return dev


class SASRecRecaller:
    name = "sasrec"

    def __init__(self, config: SASRecConfig = SASRecConfig()):
        self.config = config
        self.previous_: Path | None = None

    def warm_from(self, path: Path) -> Self:
        """Let the next fit start from the model saved at `path` (when warm_epochs asks for it)."""
        self.previous_ = path
        return self

    def _warm_state(self, n_items: int) -> dict | None:
        """The previous model's weights grown to `n_items` rows, or None when there is none to use."""
        cfg, path = self.config, self.previous_
        if not cfg.warm_epochs or path is None or not (path / "model.pt").is_file():
            return None
        try:
            ckpt = torch.load(path / "model.pt", weights_only=True)
            old_n, old_cfg = int(ckpt["n_items"]), ckpt["config"]
        except Exception as exc:   # torch.load of a damaged file raises whatever its bytes trip
            # A damaged model of yesterday costs today its head start, not its training.
            log_.warning("sasrec: cannot warm-start from %s (%s); training from scratch", path, why(exc))
            return None
        shape = ("dim", "heads", "layers", "max_len")
        if any(old_cfg.get(k) != getattr(cfg, k) for k in shape) or old_n > n_items:
            log_.info("sasrec: %s has another shape; training from scratch", path)
            return None
        state = dict(ckpt["state"])
        fresh = self.net_.item.weight.detach().clone()                              # [I + 1, d], padding last
        fresh[:old_n] = state["item.weight"][:old_n]
        state["item.weight"] = fresh
        return state

    def fit(self, data: TrainData) -> Self:
        return self.fit_sequences(click_sequences(data, self.config.window_days), data.catalog.n_items)

    def fit_sequences(self, sequences: list[np.ndarray], n_items: int) -> Self:
        """Fit from users' chronological item sequences (item ids < n_items)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        dev = training_device(cfg.device, "sasrec.device")
        self.n_items_ = n_items
        self.net_ = SASRecNet(self.n_items_, cfg)
        warm = self._warm_state(n_items)
        if warm is not None:
            self.net_.load_state_dict(warm)
        self.warm_ = warm is not None
        self.net_.to(dev)
        epochs = cfg.warm_epochs if self.warm_ else cfg.epochs
        x, y = (torch.from_numpy(a).to(dev) for a in training_windows(sequences, cfg.max_len))
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr)
        self.losses_, self.steps_ = [], 0
        self.net_.train()
        start = time.perf_counter()
        for _ in range(epochs):
            if 0 < cfg.budget_s <= time.perf_counter() - start:
                break
            order = torch.randperm(len(x), generator=gen).to(dev)
            total, count = 0.0, 0
            for lo in range(0, len(order), cfg.batch_size):
                if 0 < cfg.budget_s <= time.perf_counter() - start:
                    break
                b = order[lo:lo + cfg.batch_size]
                target = y[b]                                                       # [B, L]
                keep = target >= 0
                hidden = self.net_(x[b])[keep]                                      # [M, d]
                loss = nn.functional.cross_entropy(self.net_.scores(hidden), target[keep])  # over [M, I]
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + loss.item() * int(keep.sum()), count + int(keep.sum())
                self.steps_ += 1
            self.losses_.append(total / max(count, 1))
            log_.info("sasrec epoch %d/%d: loss %.4f, %.0f s", len(self.losses_), epochs, self.losses_[-1],
                      time.perf_counter() - start)
        self.net_.to("cpu").eval()
        self.metrics_ = {"warm_start": float(self.warm_), "epochs_run": float(len(self.losses_)),
                         "final_loss": self.losses_[-1] if self.losses_ else float("nan")}
        return self

    def score_all(self, recent: np.ndarray) -> np.ndarray:
        """Newest-first histories [B, H] -> next-item logits over the trained catalogue [B, I]."""
        hist = np.where(recent < self.n_items_, recent, -1)                         # items born after training
        seq = torch.from_numpy(chronological(hist, self.config.max_len))            # [B, L]
        with torch.no_grad():
            return self.net_.scores(self.net_(seq)[:, -1]).numpy()                  # [B, I]

    def recall(self, users: UserBatch, k: int) -> Candidates:
        scores = self.score_all(users.recent)                                       # [B, I]
        idx = top_k(scores, k)                                                      # [B, k]
        top = np.take_along_axis(scores, idx, axis=1)
        # Without history the model has nothing to attend to: leave those rows to other channels.
        has = (users.recent >= 0).any(axis=1)[:, None]
        return Candidates(items=np.where(has, idx, -1).astype(np.int64),
                          scores=np.where(has, top, 0).astype(np.float32))

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.config), "n_items": self.n_items_, "state": self.net_.state_dict()},
                   path / "model.pt")

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            ckpt = torch.load(path / "model.pt", weights_only=True)
            obj = cls(SASRecConfig(**ckpt["config"]))
            obj.n_items_ = int(ckpt["n_items"])
            obj.net_ = SASRecNet(obj.n_items_, obj.config)
            obj.net_.load_state_dict(ckpt["state"])
        except Exception as exc:   # torch.load of a damaged file raises whatever its bytes trip
            raise ModelFileError(f"cannot load sasrec from {path}: {why(exc)}; re-run training for that day") from None
        obj.net_.eval()
        return obj
