"""Two-tower recall: a user tower over recent clicks and a category mix, an item tower over id,
category and content, trained with in-batch sampled softmax; items served from a FAISS index."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from components.ranking.ids import IdTable, check_knobs
from components.recall.base import ModelFileError, why
from components.recall.faiss_index import IndexConfig, build_index, load_index, save_index, search
from components.recall.history import click_sequences, prefix_windows
from components.recall.sasrec import training_device
from components.types import Candidates, Catalog, TrainData, UserBatch


@dataclass(frozen=True)
class TwoTowerConfig:
    dim: int = 32
    hidden: int = 64
    history: int = 20            # recent clicks the user tower reads
    window_days: int = 30
    epochs: int = 2
    batch_size: int = 512
    lr: float = 3e-3
    temperature: float = 0.1
    logq: bool = True            # subtract log(item frequency): in-batch negatives oversample hits
    seed: int = 0
    device: str = "cpu"          # where training runs; serving is on CPU
    budget_s: float = 0.0        # stop training after this many seconds (checked every batch); 0: no cap
    index: IndexConfig = field(default_factory=IndexConfig)
    # Id admission for both towers' item-id embeddings (components/ranking/ids.py), counted over the
    # clicks of the window. The default (0, 0, 0) gives every item its own row, as before admission.
    min_count: int = 0           # clicks an item needs for its own row
    hash_buckets: int = 0        # rows shared by the others; at least 1 once min_count or evict_days is set
    evict_days: int = 0          # an item last clicked more than this many days ago loses its row (0: never)

    @property
    def admits(self) -> bool:
        return self.min_count > 0 or self.evict_days > 0

    def validate(self, where: str) -> None:
        check_knobs(where, self.min_count, self.hash_buckets, self.evict_days, 1 if self.admits else 0)


class ItemTower(nn.Module):
    def __init__(self, n_rows: int, n_categories: int, content_dim: int, dim: int, hidden: int):
        super().__init__()
        self.id = nn.Embedding(n_rows, dim)                                         # IdTable rows, no padding
        self.category = nn.Embedding(n_categories, dim)
        self.content = nn.Linear(content_dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, rows: torch.Tensor, category: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        # rows (the items' id-table rows), category: [N], content: [N, c] -> unit vectors [N, d]
        x = self.id(rows) + self.category(category) + self.content(content)         # [N, d]
        return nn.functional.normalize(self.mlp(x), dim=-1)


class UserTower(nn.Module):
    """Mean of the history's item embeddings plus the user's category mix and history length."""

    def __init__(self, n_items: int, n_rows: int, n_categories: int, dim: int, hidden: int):
        super().__init__()
        self.n_items = n_items
        self.history = nn.Embedding(n_rows, dim, padding_idx=n_rows - 1)           # IdTable rows, last: padding
        self.features = nn.Linear(n_categories + 1, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, hist: torch.Tensor, rows: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        # hist: [B, H] item ids, -1 padded; rows: [B, H] their id-table rows; category: [I] -> [B, d]
        valid = hist >= 0                                                           # [B, H]
        n = valid.sum(dim=1, keepdim=True).clamp(min=1)                             # [B, 1]
        ids = torch.where(valid, hist, torch.full_like(hist, self.n_items))
        pooled = self.history(rows).sum(dim=1) / n                                  # [B, d]
        cats = nn.functional.one_hot(category[ids.clamp(max=self.n_items - 1)],
                                     self.features.in_features - 1).float()         # [B, H, C]
        mix = (cats * valid[..., None]).sum(dim=1) / n                              # [B, C]
        feats = torch.cat([mix, torch.log1p(valid.sum(dim=1, keepdim=True).float())], dim=1)
        return nn.functional.normalize(self.mlp(pooled + self.features(feats)), dim=-1)


class TwoTowerRecaller:
    name = "two_tower"

    def __init__(self, config: TwoTowerConfig = TwoTowerConfig()):
        self.config = config

    def _build(self, n_items: int, n_categories: int, content_dim: int) -> None:
        cfg = self.config
        self.shape_ = (n_items, n_categories, content_dim)
        self.user_tower_ = UserTower(n_items, self.ids_.size, n_categories, cfg.dim, cfg.hidden)
        self.item_tower_ = ItemTower(self.ids_.size - 1, n_categories, content_dim, cfg.dim, cfg.hidden)

    def _rows(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.ids_.lookup(np.asarray(ids, np.int64)))

    def id_table_bytes(self) -> int:
        """Memory of both towers' item-id embeddings: what admission and eviction size."""
        return sum(p.numel() * p.element_size() for p in (self.item_tower_.id.weight, self.user_tower_.history.weight))

    def _catalog_tensors(self, catalog: Catalog) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.shape_[0]
        return (self._rows(np.arange(n)), torch.from_numpy(catalog.category[:n].astype(np.int64)),
                torch.from_numpy(np.ascontiguousarray(catalog.content[:n], np.float32)))

    def fit(self, data: TrainData) -> Self:
        cfg, cat = self.config, data.catalog
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        dev = training_device(cfg.device, "two_tower.device")
        window = data.day - data.click_day < cfg.window_days
        self.ids_ = IdTable.fit(data.click_item[window], cat.n_items, cfg.min_count, cfg.hash_buckets,
                                data.click_day[window], cfg.evict_days, today=data.day) \
            if cfg.admits else IdTable.identity(cat.n_items)
        self._build(cat.n_items, int(cat.category.max(initial=0)) + 1, cat.content.shape[1])
        self.user_tower_.to(dev)
        self.item_tower_.to(dev)
        ids, category, content = (t.to(dev) for t in self._catalog_tensors(cat))
        hist, target = prefix_windows(click_sequences(data, cfg.window_days), cfg.history)
        hist_t, target_t = torch.from_numpy(hist).to(dev), torch.from_numpy(target).to(dev)  # [N, H], [N]
        hist_rows, target_rows = self._rows(hist).to(dev), self._rows(target).to(dev)
        freq = np.bincount(target, minlength=cat.n_items) + 1.0
        log_q = torch.from_numpy(np.log(freq / freq.sum())).float().to(dev)         # [I]
        params = [*self.user_tower_.parameters(), *self.item_tower_.parameters()]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        self.losses_, self.steps_ = [], 0
        start = time.perf_counter()
        for _ in range(cfg.epochs if len(target) > 1 else 0):
            if 0 < cfg.budget_s <= time.perf_counter() - start:
                break
            order = torch.randperm(len(target), generator=gen).to(dev)
            total, seen = 0.0, 0
            for lo in range(0, len(order), cfg.batch_size):
                if 0 < cfg.budget_s <= time.perf_counter() - start:
                    break
                b = order[lo:lo + cfg.batch_size]
                t = target_t[b]                                                     # [B]
                u = self.user_tower_(hist_t[b], hist_rows[b], category)             # [B, d]
                v = self.item_tower_(target_rows[b], category[t], content[t])       # [B, d]
                logits = u @ v.T / cfg.temperature                                  # [B, B]
                if cfg.logq:
                    logits = logits - log_q[t][None, :]
                # Another row's positive that is the same item is not a negative.
                same = (t[:, None] == t[None, :]) & ~torch.eye(len(b), dtype=torch.bool, device=dev)
                logits = logits.masked_fill(same, float("-inf"))
                loss = nn.functional.cross_entropy(logits, torch.arange(len(b), device=dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, seen = total + loss.item() * len(b), seen + len(b)
                self.steps_ += 1
            self.losses_.append(total / max(seen, 1))
        self.user_tower_.to("cpu").eval()
        self.item_tower_.to("cpu").eval()
        ids, category, content = self._catalog_tensors(cat)
        self.category_ = category
        with torch.no_grad():
            vectors = self.item_tower_(ids, category, content).numpy()              # [I, d]
        self.index_ = build_index(vectors, cfg.index, cfg.seed)
        return self

    def user_vectors(self, recent: np.ndarray) -> np.ndarray:
        """Newest-first histories [B, H'] -> user vectors [B, d]."""
        hist = recent[:, : self.config.history]
        hist = np.where(hist < self.shape_[0], hist, -1)                            # items born after training
        with torch.no_grad():
            return self.user_tower_(torch.from_numpy(np.ascontiguousarray(hist, np.int64)), self._rows(hist),
                                    self.category_).numpy()

    def recall(self, users: UserBatch, k: int) -> Candidates:
        items, scores = search(self.index_, self.user_vectors(users.recent), k)
        return Candidates(items=items, scores=scores)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"config": asdict(self.config), "shape": list(self.shape_),
                    "id_rows": torch.from_numpy(self.ids_.rows), "n_admitted": self.ids_.n_admitted,
                    "user": self.user_tower_.state_dict(), "item": self.item_tower_.state_dict(),
                    "category": self.category_}, path / "model.pt")
        save_index(self.index_, path / "items.faiss")

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            ckpt = torch.load(path / "model.pt", weights_only=True)
            raw = ckpt["config"]
            obj = cls(TwoTowerConfig(**{**raw, "index": IndexConfig(**raw["index"])}))
            obj.ids_ = IdTable(ckpt["id_rows"].numpy(), int(ckpt["n_admitted"]), obj.config.hash_buckets)
            obj._build(*ckpt["shape"])
            obj.user_tower_.load_state_dict(ckpt["user"])
            obj.item_tower_.load_state_dict(ckpt["item"])
            obj.index_ = load_index(path / "items.faiss", obj.config.index)
        except Exception as exc:   # torch.load of a damaged file raises whatever its bytes trip
            raise ModelFileError(f"cannot load two_tower from {path}: {why(exc)}; re-run training for that day") from None
        obj.user_tower_.eval()
        obj.item_tower_.eval()
        obj.category_ = ckpt["category"]
        return obj
