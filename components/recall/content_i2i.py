"""Content i2i: items whose public content is close to the user's recent clicks.

Product lines, substitutes and complements sit close in what a catalogue publishes about them (the
`content` vector here, text or image embeddings in a real stack), so the neighbours of the last
few clicks by content are candidates from day 0, before any co-click was counted, and for items
nobody has clicked yet. Neighbours come from a FAISS inner-product index over unit content vectors
(exact for small catalogues, HNSW past `IndexConfig.exact_max_items`), searched once per item at
training time; serving is item-CF's (sum the neighbours of the recent clicks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from common.typedconf import require
from components.recall.base import read_state
from components.recall.faiss_index import IndexConfig, build_index, search
from components.recall.itemcf import ItemCFRecaller
from components.types import TrainData

# Items searched per FAISS call: bounds the [chunk, neighbours] result arrays on large catalogues.
SEARCH_CHUNK = 8192


@dataclass(frozen=True)
class ContentI2IConfig:
    neighbours: int = 50          # content neighbours kept per item
    history: int = 3              # most recent clicks a user's recall starts from
    recency_decay: float = 1.0    # the user's k-th most recent click (k from 0) seeds with 1 / (k + 1) ** decay
    sharpness: float = 8.0        # neighbour weight exp(sharpness * (cos - 1)): close items count most
    index: IndexConfig = field(default_factory=IndexConfig)

    def validate(self, where: str) -> None:
        for name in ("neighbours", "history"):
            value = getattr(self, name)
            require(value >= 1, f"{where}.{name}", f"must be at least 1, got {value}")
        require(self.recency_decay >= 0, f"{where}.recency_decay", f"must be >= 0, got {self.recency_decay}")
        require(self.sharpness >= 0, f"{where}.sharpness", f"must be >= 0, got {self.sharpness}")


def content_neighbours(content: np.ndarray, cfg: ContentI2IConfig) -> sp.csr_matrix:
    """sim[i, j] = exp(sharpness * (cos(i, j) - 1)) for the `neighbours` closest j != i of each item i."""
    x = content.astype(np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    index = build_index(x, cfg.index)
    rows, cols, vals = [], [], []
    for lo in range(0, n, SEARCH_CHUNK):
        ids, cos = search(index, x[lo:lo + SEARCH_CHUNK], cfg.neighbours + 1)       # [c, k + 1]
        me = np.arange(lo, lo + len(ids))[:, None]
        keep = (ids >= 0) & (ids != me)
        r = np.broadcast_to(me, ids.shape)[keep]
        rows.append(r)
        cols.append(ids[keep])
        vals.append(np.exp(cfg.sharpness * (cos[keep] - 1.0)).astype(np.float32))
    if not rows or not sum(len(r) for r in rows):
        return sp.csr_matrix((n, n), dtype=np.float32)
    sim = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return ItemCFRecaller._keep_top(sim, cfg.neighbours)


class ContentI2IRecaller(ItemCFRecaller):
    """Serving is item-CF's; the similarity is the items' published content, not co-clicks."""

    name = "content_i2i"
    config_cls = ContentI2IConfig

    def __init__(self, config: ContentI2IConfig = ContentI2IConfig()):
        self.config = config

    def fit(self, data: TrainData) -> Self:
        self.sim_ = content_neighbours(data.catalog.content, self.config).astype(np.float32)
        return self

    @classmethod
    def load(cls, path: Path) -> Self:
        config, a = read_state(path)
        obj = cls(ContentI2IConfig(**{**config, "index": IndexConfig(**config["index"])}))
        obj.sim_ = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
        return obj
