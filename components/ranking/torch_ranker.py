"""What the torch rankers share: inputs built from samples or from a served batch, a training
loop with a position-bias term, and checkpoints that carry their config and feature names."""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from components.features.definitions import FEATURES
from components.ranking.base import Samples, serving_features
from components.ranking.ids import IdTable
from components.recall.base import why
from components.types import Catalog, UserBatch

MAX_POSITION = 100
SCORE_ROWS = 256   # (request, candidate) rows a served batch is scored in at a time
ID_MODULES = ("item", "item_bias")   # the nets' modules indexed by IdTable rows


@dataclass(frozen=True)
class Inputs:
    """Model inputs for rows [...]: the dense feature vector, the item, its category, the history."""

    x: torch.Tensor                   # [..., F] standardised
    item: torch.Tensor | None         # [...] embedding rows; None for a ranker without ids
    category: torch.Tensor | None     # [...]
    history: torch.Tensor | None      # [..., H] embedding rows (padding row where empty)

    def take(self, idx: torch.Tensor) -> "Inputs":
        return Inputs(self.x[idx], *(None if t is None else t[idx] for t in (self.item, self.category, self.history)))


class PositionBias(nn.Module):
    """logit + bias[position]: soaks up how likely a slot is looked at (PAL); serving uses 0."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Embedding(MAX_POSITION, 1)
        nn.init.zeros_(self.bias.weight)

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        return self.bias(position.clamp(max=MAX_POSITION - 1)).squeeze(-1)


class TorchRanker(abc.ABC):
    """Subclasses set `name`, `config_cls` and implement `build_net(n_features)`; a net has a
    `position` (PositionBias) module and maps Inputs to a logit."""

    name: str
    config_cls: type
    # False: the net reads the feature vector alone, so no id table is fitted, looked up or saved.
    uses_ids = True
    # True: scores are click probabilities at the top slot, its position bias included (the MLP's
    # were so before it shared this base, and the lake keeps them); False: the bias is left out.
    top_slot_bias = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_cls()

    @abc.abstractmethod
    def build_net(self, n_features: int) -> nn.Module:
        """The model's network for feature vectors of width `n_features`."""

    # ---- inputs --------------------------------------------------------------------------------
    def _inputs(self, x: np.ndarray, items: np.ndarray, recent: np.ndarray, catalog: Catalog) -> Inputs:
        # x: [..., F], items: [...], recent: [..., H] (broadcast over the item axis by the caller)
        if not self.uses_ids:
            return Inputs(x=torch.from_numpy(((x - self.mean_) / self.std_).astype(np.float32)),
                          item=None, category=None, history=None)
        safe = np.where((items >= 0) & (items < catalog.n_items), items, 0)
        return Inputs(
            x=torch.from_numpy(((x - self.mean_) / self.std_).astype(np.float32)),
            item=torch.from_numpy(self.ids_.lookup(items)),
            category=torch.from_numpy(np.minimum(catalog.category[safe], self.n_categories_ - 1).astype(np.int64)),
            history=torch.from_numpy(self.ids_.lookup(recent)),
        )

    def fit(self, samples: Samples):
        cfg = self.config
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.mean_ = samples.x.mean(axis=0)
        std = samples.x.std(axis=0)
        self.std_ = np.where(std > 1e-6, std, 1.0)
        cat = samples.catalog
        if self.uses_ids:
            self.n_categories_ = int(cat.category.max(initial=0)) + 1
            # Eviction counts days back from the newest sample: the day these models are trained on.
            self.ids_ = IdTable.fit(samples.item_id, cat.n_items, cfg.min_count, cfg.hash_buckets,
                                    samples.day if cfg.evict_days else None, cfg.evict_days)
        inputs = self._inputs(samples.x, samples.item_id, samples.recent, cat)
        pos = torch.from_numpy(samples.position)
        y = torch.from_numpy(samples.label)
        self.net_ = self.build_net(samples.x.shape[1])
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr)
        self.losses_ = []
        for _ in range(cfg.epochs):
            order = torch.randperm(len(y), generator=gen)
            total = 0.0
            for lo in range(0, len(y), cfg.batch_size):
                idx = order[lo:lo + cfg.batch_size]
                logit = self.net_(inputs.take(idx)) + self.net_.position(pos[idx])    # [b]
                loss = nn.functional.binary_cross_entropy_with_logits(logit, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.losses_.append(total / max(len(y), 1))
        self.net_.eval()
        return self

    def _serving_logit(self, inputs: Inputs) -> torch.Tensor:
        z = self.net_(inputs)
        if self.top_slot_bias:
            z = z + self.net_.position(torch.zeros(z.shape, dtype=torch.long))
        return z

    def predict_samples(self, samples: Samples) -> np.ndarray:
        """Click probability of sample rows as if shown at the top (position 0)."""
        with torch.no_grad():
            z = self._serving_logit(self._inputs(samples.x, samples.item_id, samples.recent, samples.catalog))
        return torch.sigmoid(z).numpy()

    def score(self, users: UserBatch, items: np.ndarray, ranks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        x = serving_features(users, items, ranks)                                   # [B, n, F]
        recent = np.broadcast_to(users.recent[:, None, :], (*items.shape, users.recent.shape[1]))
        inputs = self._inputs(x, items, recent, users.items.catalog)
        rows = items.size
        flat = Inputs(*(None if t is None else t.reshape(rows, *t.shape[items.ndim:]) for t in
                        (inputs.x, inputs.item, inputs.category, inputs.history)))   # [B * n, ...]
        # The net and the sigmoid always see SCORE_ROWS rows at a time (the last block padded with
        # row 0): a matrix product's kernel, and a vectorised loop's scalar tail, change a result's
        # last bits with the number of rows, and a request's scores must not depend on the
        # micro-batch its shard formed.
        pad = torch.zeros((-rows) % SCORE_ROWS, dtype=torch.long)
        blocks = [torch.cat([torch.arange(lo, min(lo + SCORE_ROWS, rows)), pad[:max(lo + SCORE_ROWS - rows, 0)]])
                  for lo in range(0, rows, SCORE_ROWS)]
        with torch.no_grad():
            prob = torch.cat([torch.sigmoid(self._serving_logit(flat.take(b))) for b in blocks])[:rows] \
                if rows else torch.zeros(0)
        return np.where(items >= 0, prob.numpy().reshape(items.shape), -np.inf)

    def id_parameters(self) -> list[nn.Parameter]:
        """The parameters with a row per id-table row (item embeddings, item biases): what the id
        table's size costs in memory, and what an intra-day update moves."""
        if not self.uses_ids:
            return []
        return [p for name, p in self.net_.named_parameters() if name.split(".")[0] in ID_MODULES]

    def absorb(self, x: np.ndarray, items: np.ndarray, recent: np.ndarray, position: np.ndarray,
               label: np.ndarray, catalog: Catalog, steps: int, lr: float, batch_size: int) -> None:
        """An intra-day update: `steps` passes of plain SGD over served impressions (x [E, F] as
        served, items [E], recent [E, H], position [E], label [E]) that move the id rows alone; the
        rest of the net stays as the daily training left it. In row order, no shuffling: the same
        stream gives the same parameters."""
        params = self.id_parameters()
        if not params or not len(label):
            return
        inputs = self._inputs(x, items, recent, catalog)
        pos, y = torch.from_numpy(position.astype(np.int64)), torch.from_numpy(label.astype(np.float32))
        ids = {id(p) for p in params}
        frozen = [p for p in self.net_.parameters() if id(p) not in ids]
        for p in frozen:
            p.requires_grad_(False)
        opt = torch.optim.SGD(params, lr=lr)
        try:
            for _ in range(steps):
                for lo in range(0, len(y), batch_size):
                    idx = torch.arange(lo, min(lo + batch_size, len(y)))
                    logit = self.net_(inputs.take(idx)) + self.net_.position(pos[idx])    # [b]
                    loss = nn.functional.binary_cross_entropy_with_logits(logit, y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def id_table_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.id_parameters())

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, path) -> None:
        from dataclasses import asdict
        path.mkdir(parents=True, exist_ok=True)
        ids = {"n_categories": self.n_categories_, "id_rows": torch.from_numpy(self.ids_.rows),
               "n_admitted": self.ids_.n_admitted} if self.uses_ids else {}
        torch.save({"config": asdict(self.config), "features": [f.name for f in FEATURES],
                    "state": self.net_.state_dict(), "mean": torch.from_numpy(self.mean_),
                    "std": torch.from_numpy(self.std_), **ids}, path / "model.pt")

    @classmethod
    def load(cls, path):
        try:
            ckpt = torch.load(path / "model.pt", weights_only=True)
        except Exception as exc:   # torch.load of a damaged file raises whatever its bytes trip
            raise ValueError(f"cannot load ranker from {path}: {why(exc)}; re-run training for that day") from None
        names = [f.name for f in FEATURES]
        if ckpt["features"] != names:
            raise ValueError(f"{path}: trained on features {ckpt['features']}, this code serves {names}; retrain")
        obj = cls(cls.config_cls(**ckpt["config"]))
        obj.mean_, obj.std_ = ckpt["mean"].numpy(), ckpt["std"].numpy()
        if cls.uses_ids:
            obj.n_categories_ = int(ckpt["n_categories"])
            obj.ids_ = IdTable(ckpt["id_rows"].numpy(), int(ckpt["n_admitted"]), obj.config.hash_buckets)
        obj.net_ = obj.build_net(len(names))
        obj.net_.load_state_dict(ckpt["state"])
        obj.net_.eval()
        return obj
