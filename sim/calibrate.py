"""Calibrate a world from a real interaction log, and measure how close a simulated log comes.

The log is the sequential format of Amazon Beauty (`user item item ...` per line). What is fitted:
user activity (lognormal spread of interactions per user), item popularity (spread of log
interactions per item, carried by the hidden quality term), and the category structure (items
clustered on their co-interaction embedding; the Zipf exponent of cluster sizes). Distances are
computed on log counts centred on their mean, so a world of another size can still be compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config import BehaviorConfig, ItemConfig, OracleConfig, TrafficConfig, UserConfig, WorldConfig


@dataclass(frozen=True)
class Log:
    """Interactions as (user, item) pairs, ids dense from 0."""

    user: np.ndarray  # [N] int64
    item: np.ndarray  # [N] int64

    @property
    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user)

    @property
    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item)


def read_sequences(path: Path, max_users: int | None = None) -> Log:
    """Read `user item item ...` lines (ids from 1) into a Log with ids from 0."""
    users, items = [], []
    with open(path) as f:
        for row, line in enumerate(f):
            if max_users is not None and row >= max_users:
                break
            ids = line.split()
            if len(ids) < 2:
                raise ValueError(f"{path}:{row + 1}: expected 'user item ...', got {line.strip()!r}")
            items.extend(int(i) - 1 for i in ids[1:])
            users.extend([row] * (len(ids) - 1))
    item = np.asarray(items, np.int64)
    _, dense = np.unique(item, return_inverse=True)
    return Log(np.asarray(users, np.int64), dense.astype(np.int64))


def item_embedding(log: Log, dim: int = 16, seed: int = 0, n_items: int | None = None) -> np.ndarray:
    """Items on the leading singular vectors of the user x item matrix (randomised SVD): [I, dim]."""
    rng = np.random.default_rng(seed)
    n_users, n_items = log.user.max() + 1, n_items or log.item.max() + 1

    def a_times(x: np.ndarray) -> np.ndarray:       # [I, k] -> [U, k]
        return np.stack([np.bincount(log.user, weights=x[log.item, j], minlength=n_users) for j in range(x.shape[1])], 1)

    def at_times(y: np.ndarray) -> np.ndarray:      # [U, k] -> [I, k]
        return np.stack([np.bincount(log.item, weights=y[log.user, j], minlength=n_items) for j in range(y.shape[1])], 1)

    q, _ = np.linalg.qr(a_times(rng.standard_normal((n_items, dim + 8))))          # [U, k]
    q, _ = np.linalg.qr(a_times(at_times(q)))                                       # one power iteration
    b = at_times(q)                                                                 # [I, k] = A^T Q
    u, s, _ = np.linalg.svd(b, full_matrices=False)
    emb = u[:, :dim] * s[:dim]
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    """Spherical k-means labels: [N, d] -> [N]."""
    rng = np.random.default_rng(seed)
    # Farthest-point start: each new centre is the point least similar to those already chosen.
    chosen = [int(rng.integers(len(x)))]
    closest = x @ x[chosen[0]]                                                     # [N]
    for _ in range(k - 1):
        chosen.append(int(np.argmin(closest)))
        closest = np.maximum(closest, x @ x[chosen[-1]])
    centres = x[chosen].copy()
    for _ in range(iters):
        labels = (x @ centres.T).argmax(axis=1)
        for c in range(k):
            members = x[labels == c]
            centres[c] = members.mean(axis=0) if len(members) else x[rng.integers(len(x))]
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return (x @ centres.T).argmax(axis=1)


def hill_alpha(counts: np.ndarray, tail: float = 0.1) -> float:
    """Hill's estimate of a power-law tail index from the top `tail` share of counts."""
    x = np.sort(counts.astype(float))[::-1]
    k = max(int(len(x) * tail), 2)
    return float(1.0 / np.mean(np.log(x[:k] / x[k])))


def zipf_exponent(sizes: np.ndarray) -> float:
    """Slope of log size against log rank, sizes sorted decreasing: the Zipf exponent."""
    s = np.sort(sizes[sizes > 0])[::-1].astype(float)
    slope = np.polyfit(np.log(np.arange(1, len(s) + 1)), np.log(s), 1)[0]
    return float(max(-slope, 0.0))


@dataclass(frozen=True)
class Fit:
    n_users: int
    n_items: int
    activity_sigma: float     # std of log interactions per user
    activity_alpha: float     # Hill estimate of the tail index of interactions per user
    popularity_sigma: float   # std of log interactions per item
    category_skew: float
    n_categories: int


def fit(log: Log, n_categories: int = 20, seed: int = 0) -> Fit:
    labels = kmeans(item_embedding(log, seed=seed), n_categories, seed=seed)
    return Fit(n_users=int(log.user.max() + 1), n_items=int(log.item.max() + 1),
               activity_sigma=float(np.log(log.user_counts).std()),
               activity_alpha=hill_alpha(log.user_counts),
               popularity_sigma=float(np.log(log.item_counts).std()),
               category_skew=zipf_exponent(np.bincount(labels, minlength=n_categories)),
               n_categories=n_categories)


def scenario(f: Fit, name: str = "beauty", seed: int = 31) -> WorldConfig:
    """A world the size of the log, with its activity spread, popularity spread and category sizes.

    Sessions are set so that a month of random exposure gives users about the log's mean number of
    interactions; popularity is carried by item quality (a slate's click share grows like exp(quality)).
    """
    return WorldConfig(
        name=name, seed=seed, latent_dim=16, collab_dim=8,
        users=UserConfig(n=f.n_users, favourite_categories=2, activity="pareto",
                         activity_sigma=round(f.activity_sigma, 3), activity_alpha=round(max(f.activity_alpha, 1.05), 3)),
        items=ItemConfig(n=f.n_items, n_categories=f.n_categories, subcategories=1,
                         category_skew=round(f.category_skew, 3), quality_sigma=round(f.popularity_sigma, 3)),
        behavior=BehaviorConfig(),
        traffic=TrafficConfig(sessions_per_user=1.0, requests_per_session=1.5),
        oracle=OracleConfig(sample_requests=2000),
    )


def centred_log(counts: np.ndarray, min_count: int = 1) -> np.ndarray:
    x = np.log(counts[counts >= min_count].astype(float))
    return x - x.mean()


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def wasserstein(a: np.ndarray, b: np.ndarray, points: int = 2001) -> float:
    """Earth mover's distance in one dimension: mean gap between the quantile functions."""
    q = np.linspace(0, 1, points)
    return float(np.abs(np.quantile(a, q) - np.quantile(b, q)).mean())
