"""Offline ranking metrics."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); nan when only one class is present."""
    pos = label > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(label: np.ndarray, prob: np.ndarray) -> float:
    p = np.clip(prob, 1e-7, 1 - 1e-7)
    return float(-np.mean(label * np.log(p) + (1 - label) * np.log(1 - p)))


def gauc(user: np.ndarray, label: np.ndarray, score: np.ndarray) -> float:
    """AUC per user weighted by the user's rows, over users with both clicks and non-clicks."""
    total, weight = 0.0, 0
    order = np.argsort(user, kind="stable")
    u, y, s = user[order], label[order], score[order]
    cuts = np.flatnonzero(np.diff(u)) + 1
    for yy, ss in zip(np.split(y, cuts), np.split(s, cuts)):
        a = auc(yy, ss)
        if not np.isnan(a):
            total, weight = total + a * len(yy), weight + len(yy)
    return total / weight if weight else float("nan")


def calibration(label: np.ndarray, prob: np.ndarray) -> float:
    """Predicted clicks / actual clicks: 1 is calibrated, above 1 over-predicts."""
    return float(prob.sum() / max(label.sum(), 1e-9))
