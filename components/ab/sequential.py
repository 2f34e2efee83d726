"""Always-valid inference for daily looks: the mixture sequential probability ratio test (mSPRT).

Looking at a fixed-horizon p-value every day and stopping at the first p < alpha inflates the
false-positive rate well above alpha. The mSPRT (Johari, Pekelis, Walsh, 2017) mixes the
likelihood ratio of an asymptotically normal estimate over effects theta ~ N(0, tau^2); its
inverse, kept as a running minimum over looks, is a p-value valid at any stopping time, and the
effects it does not reject form a confidence sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_likelihood_ratio(estimate: float, se: float, tau: float) -> float:
    """log of the mixture likelihood ratio against effect 0, for estimate ~ N(theta, se^2)."""
    v, t2 = se**2, tau**2
    return float(0.5 * np.log(v / (v + t2)) + t2 * estimate**2 / (2 * v * (v + t2)))


def msprt_p(estimate: float, se: float, tau: float) -> float:
    """The mSPRT p-value of one look (before the running minimum)."""
    if not (np.isfinite(estimate) and np.isfinite(se)) or se <= 0:
        return float("nan")
    return float(min(1.0, np.exp(-log_likelihood_ratio(estimate, se, tau))))


def half_width(se: float, tau: float, alpha: float) -> float:
    """Half-width of the confidence sequence at one look: the effects mSPRT does not reject."""
    v, t2 = se**2, tau**2
    return float(np.sqrt(v * (v + t2) / t2 * (2 * np.log(1 / alpha) + np.log((v + t2) / v))))


@dataclass(frozen=True)
class AlwaysValid:
    p_value: np.ndarray   # [T] running minimum over looks
    ci_low: np.ndarray    # [T] running intersection of the intervals
    ci_high: np.ndarray


def always_valid(estimates: np.ndarray, ses: np.ndarray, tau: float, alpha: float) -> AlwaysValid:
    """p-values and confidence sequence after each of T looks at a cumulative estimate."""
    p, lo, hi = [], [], []
    best_p, low, high = 1.0, -np.inf, np.inf
    for est, se in zip(np.asarray(estimates, float), np.asarray(ses, float)):
        if np.isfinite(est) and np.isfinite(se) and se > 0:
            best_p = min(best_p, msprt_p(est, se, tau))
            w = half_width(se, tau, alpha)
            low, high = max(low, est - w), min(high, est + w)
        p.append(best_p)
        lo.append(low if np.isfinite(low) else np.nan)
        hi.append(high if np.isfinite(high) else np.nan)
    return AlwaysValid(np.array(p), np.array(lo), np.array(hi))
