"""Click sequences from a click log, the input of the sequence-aware channels."""
from __future__ import annotations

import numpy as np

from components.types import TrainData


def click_sequences(data: TrainData, window_days: int | None = None) -> list[np.ndarray]:
    """Each user's clicked items in time order (users with no click in the window left out)."""
    keep = np.ones(len(data.click_item), bool) if window_days is None else data.day - data.click_day < window_days
    users, items, ts = data.click_user[keep], data.click_item[keep], data.click_ts[keep]
    order = np.lexsort((np.arange(len(ts)), ts, users))          # by user, then time, then log order
    users, items = users[order], items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    return [s for s in np.split(items, cuts) if len(s)]


def prefix_windows(seqs: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (history, next item) pair: histories [N, length] newest first, -1 padded; targets [N]."""
    hist, target = [], []
    for seq in seqs:
        for t in range(1, len(seq)):
            h = seq[max(0, t - length):t][::-1]
            hist.append(np.pad(h, (0, length - len(h)), constant_values=-1))
            target.append(seq[t])
    if not hist:
        return np.zeros((0, length), np.int64), np.zeros(0, np.int64)
    return np.stack(hist).astype(np.int64), np.asarray(target, np.int64)


def chronological(recent: np.ndarray, length: int) -> np.ndarray:
    """Newest-first, -1 padded histories [B, H] -> oldest-first, left-padded with -1 [B, length]."""
    b = recent.shape[0]
    out = np.full((b, length), -1, np.int64)
    valid = recent[:, :length] >= 0                                                 # [B, L']
    n = valid.sum(axis=1)
    for row in range(b):
        if n[row]:
            out[row, length - n[row]:] = recent[row, : n[row]][::-1]
    return out
