"""One seed reproduces a campaign: every random stream is derived from (seed, day, purpose)."""
from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, day: int, purpose: str) -> np.random.Generator:
    """An independent generator for one purpose on one day."""
    return np.random.default_rng([seed, day, zlib.crc32(purpose.encode())])
