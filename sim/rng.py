"""One seed reproduces a campaign: every random stream is derived from (seed, day, purpose).

Two kinds of randomness. `stream` is a generator for work done once per day over the whole world
(traffic, drift, churn). `keyed_uniform` gives one number per key (a request id, a user id) that
does not depend on which other keys are drawn with it, so a day split into shards, or served in
another batch order, draws exactly the same clicks.
"""
from __future__ import annotations

import zlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stream(seed: int, day: int, purpose: str) -> np.random.Generator:
    """An independent generator for one purpose on one day."""
    return np.random.default_rng([seed, day, zlib.crc32(purpose.encode())])


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 keys."""
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def keyed_uniform(seed: int, day: int, purpose: str, keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per key, a pure function of (seed, day, purpose, key): keys [N] -> [N] float64."""
    salt = np.uint64((seed * 1_000_003 + day * 7_919 + zlib.crc32(purpose.encode())) % 2**63)
    with np.errstate(over="ignore"):
        h = mix64(mix64(np.asarray(keys).astype(np.uint64) + salt * _GOLDEN) + salt)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def shard_of(user_ids: np.ndarray, n_shards: int) -> np.ndarray:
    """The shard serving each user: a hash of the user id, so shards stay balanced and stable."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    return (mix64(np.asarray(user_ids) + np.uint64(0x5EED)) % np.uint64(n_shards)).astype(np.int64)
