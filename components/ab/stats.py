"""CTR as a ratio metric over user-randomised traffic: delta-method intervals, lift, SRM, power."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class ArmSummary:
    users: int
    impressions: int
    clicks: int
    ctr: float
    se: float        # delta-method standard error of the ratio

    @property
    def ci(self) -> tuple[float, float]:
        return self.ctr - Z95 * self.se, self.ctr + Z95 * self.se


def ctr_summary(clicks: np.ndarray, impressions: np.ndarray) -> ArmSummary:
    """CTR = sum(clicks) / sum(impressions) with per-user clicks and impressions [N].

    Users, not impressions, are the randomisation unit, so impressions of one user are not
    independent; the delta method gives the variance of the ratio of the two user means.
    """
    c, n = np.asarray(clicks, float), np.asarray(impressions, float)
    users = len(n)
    if users == 0 or n.sum() == 0:
        return ArmSummary(users, int(n.sum()), int(c.sum()), float("nan"), float("nan"))
    mc, mn = c.mean(), n.mean()
    ctr = mc / mn
    if users < 2:
        return ArmSummary(users, int(n.sum()), int(c.sum()), ctr, float("nan"))
    cov = np.cov(c, n, ddof=1)                                                      # [2, 2]
    var = (cov[0, 0] - 2 * ctr * cov[0, 1] + ctr**2 * cov[1, 1]) / (users * mn**2)
    return ArmSummary(users, int(n.sum()), int(c.sum()), ctr, float(np.sqrt(max(var, 0.0))))


@dataclass(frozen=True)
class Comparison:
    lift: float          # relative: treatment / control - 1
    ci_low: float
    ci_high: float
    p_value: float
    diff: float = float("nan")       # absolute: treatment CTR - control CTR
    diff_ci_low: float = float("nan")
    diff_ci_high: float = float("nan")
    se_lift: float = float("nan")
    se_diff: float = float("nan")


def compare(control: ArmSummary, treatment: ArmSummary) -> Comparison:
    """Relative and absolute lift with delta-method intervals (arms independent).

    p is the z-test of the relative lift with the same delta-method SE as its interval, so p < 0.05
    exactly when the 95 % lift interval excludes 0: the verdict shows the two side by side, and the
    always-valid test works on the relative lift too. A z-test of the absolute difference has
    another SE (the ratio's SE also carries control's noise scaled by the lift) and near the
    boundary would call an effect significant beside an interval that contains 0. The absolute
    interval is reported as well, on its own scale.
    """
    rc, rt = control.ctr, treatment.ctr
    lift = rt / rc - 1.0 if rc > 0 else float("nan")
    se_lift = np.sqrt(treatment.se**2 / rc**2 + rt**2 * control.se**2 / rc**4) if rc > 0 else float("nan")
    se_diff = np.sqrt(treatment.se**2 + control.se**2)
    diff = rt - rc
    p = float(2 * stats.norm.sf(abs(lift) / se_lift)) if np.isfinite(lift) and se_lift > 0 else float("nan")
    return Comparison(lift=float(lift), ci_low=float(lift - Z95 * se_lift),
                      ci_high=float(lift + Z95 * se_lift), p_value=p, diff=float(diff),
                      diff_ci_low=float(diff - Z95 * se_diff), diff_ci_high=float(diff + Z95 * se_diff),
                      se_lift=float(se_lift), se_diff=float(se_diff))


def power(effect: float, se: float, alpha: float = 0.05) -> float:
    """Chance that a two-sided z-test at `alpha` rejects when the estimate ~ N(effect, se^2)."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    shift = abs(effect) / se
    return float(stats.norm.sf(z - shift) + stats.norm.cdf(-z - shift))


def srm_pvalue(counts: Mapping[str, int], shares: Mapping[str, float]) -> float:
    """Chi-squared test of observed users per arm against the configured shares (percent)."""
    arms = [a for a in shares if shares[a] > 0]
    observed = np.array([counts.get(a, 0) for a in arms], float)
    if observed.sum() == 0 or len(arms) < 2:
        return 1.0
    expected = np.array([shares[a] for a in arms], float)
    expected = expected / expected.sum() * observed.sum()
    return float(stats.chisquare(observed, expected).pvalue)
