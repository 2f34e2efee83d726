"""Users to arms by a salted hash into 10,000 buckets: sticky, independent across experiments."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

BUCKETS = 10_000


class SplitError(ValueError):
    """Traffic shares that cannot be served."""


class Splitter:
    def __init__(self, salt: str, shares: Mapping[str, float]):
        """`shares` maps arm -> percent of users; they must sum to 100."""
        if not shares:
            raise SplitError("a split needs at least one arm")
        bad = {a: s for a, s in shares.items() if not 0 <= s <= 100}
        if bad:
            raise SplitError(f"shares must be between 0 and 100 percent, got {bad}")
        total = sum(shares.values())
        if abs(total - 100.0) > 1e-6:
            raise SplitError(f"traffic shares must sum to 100 percent, got {total:g} ({dict(shares)})")
        self.salt = salt
        self.arms = list(shares)
        edges = np.round(np.cumsum([shares[a] for a in self.arms]) * BUCKETS / 100.0).astype(np.int64)
        self.edges = edges  # arm i owns buckets [edges[i-1], edges[i])

    def bucket(self, user_ids: np.ndarray) -> np.ndarray:
        """Bucket in [0, 10000) of each user: blake2b of 'salt:user_id'."""
        out = np.empty(len(user_ids), np.int64)
        for i, u in enumerate(np.asarray(user_ids).tolist()):
            digest = hashlib.blake2b(f"{self.salt}:{u}".encode(), digest_size=8).digest()
            out[i] = int.from_bytes(digest, "little") % BUCKETS
        return out

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """Arm name of each user: [N] object array."""
        idx = np.searchsorted(self.edges, self.bucket(user_ids), side="right")
        return np.asarray(self.arms, dtype=object)[idx]
