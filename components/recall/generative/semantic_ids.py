"""Semantic ids: quantised codes per item plus a last level that makes every id unique."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.recall.generative.quantize import Quantizer, QuantizerConfig, fit_quantizer


@dataclass
class SemanticIds:
    """Item -> code tuple (levels + 1 unique level), and the reverse lookup of a full id."""

    quantizer: Quantizer
    codes: np.ndarray          # [I, L + 1] int64; -1 rows for items that could not get an id
    unique_size: int           # codes of the unique level (at most this many items per prefix)

    @property
    def n_levels(self) -> int:
        return self.codes.shape[1]

    @property
    def codebook_size(self) -> int:
        return max(self.quantizer.codebook_size, self.unique_size)

    @property
    def n_items(self) -> int:
        return len(self.codes)

    def add_items(self, embeddings: np.ndarray) -> np.ndarray:
        """Give new items ids from their content, the sequence model unchanged; returns their codes.

        An item whose prefix already holds `unique_size` items gets no id (-1 row) and cannot be
        recalled by this channel until the next retraining.
        """
        prefix = self.quantizer.codes(embeddings)                                   # [N, L]
        taken: dict[tuple[int, ...], int] = {}
        for row in self.codes:
            if row[0] >= 0:
                key = tuple(row[:-1].tolist())
                taken[key] = max(taken.get(key, -1), int(row[-1]))
        new = np.full((len(prefix), self.n_levels), -1, np.int64)
        for i, p in enumerate(prefix):
            key = tuple(p.tolist())
            u = taken.get(key, -1) + 1
            if u < self.unique_size:
                taken[key] = u
                new[i] = [*key, u]
        self.codes = np.concatenate([self.codes, new])
        return new

    def metrics(self, embeddings: np.ndarray) -> dict[str, float]:
        """What MLflow records about the ids: reconstruction, utilisation, collisions, prefix sizes."""
        ok = self.codes[:, 0] >= 0
        codes = self.codes[ok]
        k = self.quantizer.codebook_size
        out = {"reconstruction_loss": self.quantizer.reconstruction_loss(embeddings[: len(self.codes)][ok])}
        for level in range(codes.shape[1] - 1):
            out[f"utilisation_level{level}"] = len(np.unique(codes[:, level])) / k
        _, counts = np.unique(codes[:, :-1], axis=0, return_counts=True)
        out["collision_rate"] = float(1.0 - len(counts) / max(len(codes), 1))   # items sharing a prefix
        out["items_per_prefix_mean"] = float(counts.mean()) if len(counts) else 0.0
        out["items_per_prefix_max"] = float(counts.max()) if len(counts) else 0.0
        out["unique_level_size"] = float(self.unique_size)
        out["items_without_id"] = float((~ok).sum())
        return out


def build_semantic_ids(embeddings: np.ndarray, cfg: QuantizerConfig, seed: int = 0,
                       unique_slack: int = 8) -> SemanticIds:
    """Quantise item embeddings [I, d] and append the unique level (room for `unique_slack` more)."""
    quantizer = fit_quantizer(embeddings, cfg, seed)
    prefix = quantizer.codes(embeddings)                                             # [I, L]
    _, inverse, counts = np.unique(prefix, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    # Rank of each item within its prefix group, in item order: the unique level's code.
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(prefix), np.int64)
    rank[order] = np.arange(len(prefix)) - np.repeat(starts, counts)
    codes = np.concatenate([prefix, rank[:, None]], axis=1)                          # [I, L + 1]
    return SemanticIds(quantizer, codes, int(counts.max()) + unique_slack)
