"""Where users go next: a sparse item-to-item transition kernel, the world's sequential structure.

Real logs are dominated by item-to-item structure (complements, refills, product lines): what a
user takes next depends on what they took last. The world holds it as a row-stochastic kernel K
(K[i, j]: how strongly item i leads on to item j), hidden like every other truth of the world. It
comes either from a real log (sim/calibrate.py counts who took what after what) or from a prior:
each arriving item links to a few items, mostly of its own top-level category, preferring items
close to it in hidden taste and of high quality. Links are two-way, so old items lead on to new
arrivals too; the kernel through day d depends only on the cohorts through day d.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANDIDATES = 256   # items an arriving item considers linking to: bounds the cost on large catalogues
CHUNK = 4096       # arriving items linked at a time: bounds the memory of the [chunk, CANDIDATES] arrays


@dataclass(frozen=True, eq=False)
class Transitions:
    """K as CSR over items: row i's targets `indices[indptr[i]:indptr[i+1]]`, weights summing to 1."""

    indptr: np.ndarray    # [I + 1] int64
    indices: np.ndarray   # [nnz] int64, sorted within each row
    weights: np.ndarray   # [nnz] float32, each non-empty row sums to 1
    keys: np.ndarray      # [nnz] int64 sorted: row * n_items + col, for lookups

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transitions) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) and getattr(self, f).dtype == getattr(other, f).dtype
            for f in ("indptr", "indices", "weights", "keys"))

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, strength: np.ndarray, n_items: int) -> "Transitions":
        """Sum duplicate edges, drop self-loops and normalise every row to one."""
        keep = (src != dst) & (strength > 0)
        keys = src[keep].astype(np.int64) * n_items + dst[keep]
        uniq, inv = np.unique(keys, return_inverse=True)
        w = np.bincount(inv, weights=strength[keep].astype(np.float64), minlength=len(uniq))
        rows, cols = uniq // n_items, uniq % n_items
        totals = np.bincount(rows, weights=w, minlength=n_items)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_items))]).astype(np.int64)
        return cls(indptr, cols.astype(np.int64), (w / totals[rows]).astype(np.float32), uniq)

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """K[rows, cols] elementwise (0 where there is no link or a row is -1): any shape, float32."""
        if len(self.keys) == 0:
            return np.zeros(np.shape(cols), np.float32)
        keys = np.where(rows >= 0, rows, 0).astype(np.int64) * self.n_items + cols
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where((self.keys[pos] == keys) & (rows >= 0), self.weights[pos], np.float32(0))

    def affinity(self, recent: np.ndarray, items: np.ndarray, lag: np.ndarray) -> np.ndarray:
        """sum_l lag[l] * K[recent[:, l], items]: recent [B, L] (-1 empty), items [B, K] -> [B, K]."""
        out = np.zeros(items.shape, np.float32)
        for l in range(recent.shape[1]):
            out += lag[l] * self.lookup(recent[:, l:l + 1], items)
        return out

    def dense_affinity(self, recent: np.ndarray, lag: np.ndarray) -> np.ndarray:
        """The affinity of every item: recent [b, L] -> [b, I], adding rows in a fixed order."""
        out = np.zeros((len(recent), self.n_items), np.float32)
        for l in range(recent.shape[1]):
            for r, i in enumerate(recent[:, l].tolist()):
                if i >= 0:
                    lo, hi = self.indptr[i], self.indptr[i + 1]
                    out[r, self.indices[lo:hi]] += lag[l] * self.weights[lo:hi]
        return out


def lag_weights(memory: int, lag_decay: float) -> np.ndarray:
    return (np.float32(lag_decay) ** np.arange(memory)).astype(np.float32)


def generated_edges(latent: np.ndarray, top_category: np.ndarray, quality: np.ndarray, new: slice,
                    neighbours: int, locality: float, cross_category: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links of the items in `new` (a cohort) to items arrived by then (`latent[:new.stop]`).

    Each arriving item draws CANDIDATES items, a share `cross_category` from the whole catalogue
    and the rest from its own top-level category, and links to the `neighbours` best by
    locality * taste similarity + quality + Gumbel noise; a link's strength grows with similarity.
    Every link also runs backwards, so the items it joins lead to each other.
    """
    n = new.stop
    if new.stop - new.start == 0 or n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    order = np.argsort(top_category[:n], kind="stable")                             # items grouped by category
    cats = top_category[order]
    parts = [_links(latent, top_category, quality, np.arange(lo, min(lo + CHUNK, new.stop)), order, cats,
                    neighbours, locality, cross_category, rng) for lo in range(new.start, new.stop, CHUNK)]
    src, dst, strength = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([strength, strength])


def _links(latent: np.ndarray, top_category: np.ndarray, quality: np.ndarray, ids: np.ndarray, order: np.ndarray,
           cats: np.ndarray, neighbours: int, locality: float, cross_category: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(order)
    first = np.searchsorted(cats, top_category[ids])                                # [m] start of own category
    size = np.searchsorted(cats, top_category[ids], side="right") - first           # [m]
    p = CANDIDATES
    local = order[first[:, None] + (rng.random((len(ids), p)) * size[:, None]).astype(np.int64)]  # [m, p]
    anywhere = rng.integers(0, n, size=(len(ids), p))
    cand = np.where(rng.random((len(ids), p)) < cross_category, anywhere, local)    # [m, p]
    sim = np.einsum("md,mpd->mp", latent[ids], latent[cand])                        # [m, p]
    score = locality * sim + quality[cand] + rng.gumbel(size=cand.shape)
    score[cand == ids[:, None]] = -np.inf
    k = min(neighbours, p - 1)
    best = np.argpartition(-score, k - 1, axis=1)[:, :k]                            # [m, k]
    dst = np.take_along_axis(cand, best, axis=1)
    strength = np.exp(locality * (np.take_along_axis(sim, best, axis=1) - 1.0)).astype(np.float32)
    return np.repeat(ids, k), dst.reshape(-1), strength.reshape(-1)
