"""CUPED for a ratio metric: each user's behaviour before the experiment as the covariate.

CTR = sum(clicks) / sum(impressions) is linearised per user (the delta method) into
L_i = (clicks_i - ctr * impressions_i) / mean(impressions), whose arm mean has the variance of the
ratio. The same linearisation of the user's pre-experiment clicks and impressions, M_i, is known
before assignment, so subtracting theta * (mean_arm(M) - mean_all(M)) leaves the estimate unbiased
and removes the part of the noise that the past explains (Deng et al., WSDM 2013).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from components.ab.stats import ArmSummary


@dataclass(frozen=True)
class UserData:
    """Per-user totals of one arm, [N] each; users without pre-experiment data have pre_* = 0."""

    clicks: np.ndarray
    impressions: np.ndarray
    pre_clicks: np.ndarray
    pre_impressions: np.ndarray


@dataclass(frozen=True)
class CupedFit:
    arms: dict[str, ArmSummary]     # CTR adjusted by the covariate, with its standard error
    theta: float                    # the regression slope of L on M, pooled within arms


def cuped(data: Mapping[str, UserData]) -> CupedFit:
    """Adjusted CTR and standard error of every arm."""
    pre_c = np.concatenate([np.asarray(d.pre_clicks, float) for d in data.values()])
    pre_n = np.concatenate([np.asarray(d.pre_impressions, float) for d in data.values()])
    pre_mean = pre_n.mean() if len(pre_n) else 0.0
    pre_ctr = pre_c.sum() / pre_n.sum() if pre_n.sum() > 0 else 0.0
    lin, cov_m, sxy, sxx = {}, {}, 0.0, 0.0
    for arm, d in data.items():
        c, n = np.asarray(d.clicks, float), np.asarray(d.impressions, float)
        if len(n) < 2 or n.sum() == 0:
            continue
        ctr = c.sum() / n.sum()
        L = (c - ctr * n) / n.mean()                                             # [N]
        M = ((np.asarray(d.pre_clicks, float) - pre_ctr * np.asarray(d.pre_impressions, float))
             / pre_mean if pre_mean > 0 else np.zeros(len(n)))                   # [N]
        lin[arm], cov_m[arm] = (ctr, L), M
        sxy += float(((L - L.mean()) * (M - M.mean())).sum())
        sxx += float(((M - M.mean()) ** 2).sum())
    theta = sxy / sxx if sxx > 0 else 0.0
    m_all = np.concatenate(list(cov_m.values())).mean() if cov_m else 0.0
    out = {}
    for arm, d in data.items():
        n = np.asarray(d.impressions, float)
        if arm not in lin:
            ctr = float(np.asarray(d.clicks, float).sum() / n.sum()) if n.sum() > 0 else float("nan")
            out[arm] = ArmSummary(len(n), int(n.sum()), int(np.sum(d.clicks)), ctr, float("nan"))
            continue
        ctr, L = lin[arm]
        M = cov_m[arm]
        adjusted = ctr - theta * (M.mean() - m_all)
        se = float(np.std(L - theta * M, ddof=1) / np.sqrt(len(L)))
        out[arm] = ArmSummary(len(n), int(n.sum()), int(np.sum(d.clicks)), float(adjusted), se)
    return CupedFit(arms=out, theta=float(theta))
