"""A known effect the world can be told to apply: a truth against which A/B statistics are checked.

The world favours the users of one arm by adding `logit` to the log-odds of every click they
might make; the recommender never sees this setting, only the clicks that follow from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.typedconf import require


@dataclass(frozen=True)
class EffectConfig:
    arm: str = ""                     # the arm whose users the world favours; "" for no effect
    logit: float = 0.0                # added to the click log-odds of that arm's users

    def validate(self, where: str) -> None:
        require(abs(self.logit) <= 5, f"{where}.logit", f"must be between -5 and 5, got {self.logit}")
        require(bool(self.arm) or self.logit == 0, f"{where}.arm", "name the arm the effect applies to")


def favour(prob: np.ndarray, favoured: np.ndarray, logit: float) -> np.ndarray:
    """Click probabilities [B, K] with `logit` added to the log-odds of the favoured rows [B]."""
    if logit == 0 or not np.any(favoured):
        return prob
    p = np.clip(prob[favoured], 0.0, 1.0)                                          # [b, K]
    odds = np.exp(logit) * p / np.maximum(1.0 - p, 1e-12)
    out = prob.copy()
    out[favoured] = np.where(p > 0, odds / (1.0 + odds), 0.0)
    # In the one-choice model a request's slot probabilities are shares of one click: keep them so.
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 1.0, out / np.maximum(total, 1e-12), out)
