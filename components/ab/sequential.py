"""Always-valid inference for daily looks: the mixture sequential probability ratio test (mSPRT).

Looking at a fixed-horizon p-value every day and stopping at the first p < alpha inflates the
false-positive rate well above alpha. The mSPRT (Johari, Pekelis, Walsh, 2017) mixes the
likelihood ratio of an asymptotically normal estimate over effects theta ~ N(0, tau^2). Under the
null its inverse falls to alpha at some look, ever, with probability at most alpha, so a reader
may stop at any day; the effects it does not reject at a look form a confidence sequence.

Each look is reported on its own rather than as a running minimum (or running intersection):
the chance of ever crossing is what is controlled either way, and a look's p-value then agrees
with its interval and the interval with its estimate even when the effect drifts from day to day,
which the running intersection assumes it does not.
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
    p_value: np.ndarray   # [T] mSPRT p at each look
    ci_low: np.ndarray    # [T] confidence sequence at each look
    ci_high: np.ndarray

    @property
    def ever_rejected_p(self) -> float:
        """The smallest p over the looks: below alpha means some look rejected (and one could stop)."""
        finite = self.p_value[np.isfinite(self.p_value)]
        return float(finite.min()) if len(finite) else float("nan")


def always_valid(estimates: np.ndarray, ses: np.ndarray, tau: float, alpha: float) -> AlwaysValid:
    """p-values and confidence sequence at each of T looks at a cumulative estimate."""
    est, se = np.asarray(estimates, float), np.asarray(ses, float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    p = np.full(len(est), np.nan)
    lo, hi = np.full(len(est), np.nan), np.full(len(est), np.nan)
    for i in np.flatnonzero(ok):
        p[i] = msprt_p(est[i], se[i], tau)
        w = half_width(se[i], tau, alpha)
        lo[i], hi[i] = est[i] - w, est[i] + w
    return AlwaysValid(p, lo, hi)
