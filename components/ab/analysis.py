"""One analysis of an experiment: per-arm CTR, lifts, CUPED, SRM, always-valid p, guardrails."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from common.typedconf import require
from components.ab.cuped import UserData, cuped
from components.ab.sequential import always_valid
from components.ab.stats import compare, ctr_summary, srm_pvalue


@dataclass(frozen=True)
class AnalysisConfig:
    alpha: float = 0.05
    method: Literal["always_valid", "fixed_horizon"] = "always_valid"  # what the verdict uses
    msprt_tau: float = 0.05           # mSPRT mixture spread, as a relative lift: the effects we expect
    cuped: bool = True                # the comparison page starts with CUPED on
    srm_alpha: float = 0.001
    p99_max_increase: float = 0.5     # guardrail: treatment p99 above control's by more than this share
    p99_min_ms: float = 1.0           # ... and by more than this, so timer noise on tiny stages passes

    def validate(self, where: str) -> None:
        require(0 < self.alpha < 1, f"{where}.alpha", f"must be between 0 and 1, got {self.alpha}")
        require(self.msprt_tau > 0, f"{where}.msprt_tau", "must be > 0")
        require(0 < self.srm_alpha < 1, f"{where}.srm_alpha", "must be between 0 and 1")
        require(self.p99_max_increase >= 0, f"{where}.p99_max_increase", "must be >= 0")
        require(self.p99_min_ms >= 0, f"{where}.p99_min_ms", "must be >= 0")


def look(data: Mapping[str, UserData], shares: Mapping[str, float], control: str) -> dict[str, dict]:
    """Fixed-horizon and CUPED statistics of each arm at one look, from per-user totals."""
    plain = {a: ctr_summary(d.clicks, d.impressions) for a, d in data.items()}
    fit = cuped(data)
    srm = srm_pvalue({a: s.users for a, s in plain.items()}, shares)
    out = {}
    for arm, s in plain.items():
        adj = fit.arms[arm]
        row = {"users": s.users, "impressions": s.impressions, "clicks": s.clicks,
               "ctr": s.ctr, "ctr_se": s.se, "ctr_ci_low": s.ci[0], "ctr_ci_high": s.ci[1],
               "cuped_ctr": adj.ctr, "cuped_ctr_ci_low": adj.ci[0], "cuped_ctr_ci_high": adj.ci[1],
               "srm_p": srm}
        if arm != control and s.users and plain[control].users:
            c, k = compare(plain[control], s), compare(fit.arms[control], adj)
            reduction = 1 - k.se_diff**2 / c.se_diff**2 if c.se_diff > 0 else float("nan")
            row |= {"lift": c.lift, "lift_ci_low": c.ci_low, "lift_ci_high": c.ci_high, "lift_se": c.se_lift,
                    "diff": c.diff, "diff_ci_low": c.diff_ci_low, "diff_ci_high": c.diff_ci_high,
                    "p_value": c.p_value,
                    "cuped_lift": k.lift, "cuped_lift_ci_low": k.ci_low, "cuped_lift_ci_high": k.ci_high,
                    "cuped_lift_se": k.se_lift, "cuped_diff": k.diff, "cuped_diff_ci_low": k.diff_ci_low,
                    "cuped_diff_ci_high": k.diff_ci_high, "cuped_p_value": k.p_value,
                    "cuped_variance_reduction": float(reduction)}
        out[arm] = row
    return out


def always_valid_lift(looks: Sequence[Mapping[str, dict]], arm: str, config: AnalysisConfig,
                      prefix: str = "") -> dict:
    """Always-valid p and confidence sequence of `arm`'s relative lift at the last of `looks`,
    and the smallest p of all looks so far (below alpha: the experiment could have stopped)."""
    est = np.array([lk[arm].get(f"{prefix}lift", np.nan) if arm in lk else np.nan for lk in looks], float)
    se = np.array([lk[arm].get(f"{prefix}lift_se", np.nan) if arm in lk else np.nan for lk in looks], float)
    av = always_valid(est, se, config.msprt_tau, config.alpha)
    return {f"{prefix}av_p_value": float(av.p_value[-1]), f"{prefix}av_lift_ci_low": float(av.ci_low[-1]),
            f"{prefix}av_lift_ci_high": float(av.ci_high[-1]), f"{prefix}av_min_p_value": av.ever_rejected_p}


@dataclass(frozen=True)
class Breach:
    arm: str
    stage: str
    p99: float
    control_p99: float

    def __str__(self) -> str:
        return (f"{self.arm}: {self.stage} p99 {self.p99:.2f} ms vs control {self.control_p99:.2f} ms "
                f"({self.p99 / self.control_p99 - 1:+.0%})" if self.control_p99 > 0 else
                f"{self.arm}: {self.stage} p99 {self.p99:.2f} ms vs control 0 ms")


def latency_breaches(rows: Sequence[Mapping], control: str, config: AnalysisConfig) -> list[Breach]:
    """Treatment stages whose p99 latency exceeds control's by the guardrail's margin.

    `rows` carry arm, stage, p99 (a day of latency_daily). Both a relative margin and an absolute
    floor must be crossed: sub-millisecond stages jitter by more than 50 % between runs.
    """
    ctrl = {r["stage"]: float(r["p99"]) for r in rows if r["arm"] == control}
    out = []
    for r in rows:
        if r["arm"] == control or r["stage"] not in ctrl:
            continue
        base, p99 = ctrl[r["stage"]], float(r["p99"])
        if p99 > base * (1 + config.p99_max_increase) and p99 - base > config.p99_min_ms:
            out.append(Breach(r["arm"], r["stage"], p99, base))
    return out
