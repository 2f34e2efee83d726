"""components/ab: absolute lift, CUPED, the always-valid mSPRT, guardrails, power."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from components.ab import (AnalysisConfig, ArmSummary, UserData, always_valid, compare, ctr_summary, cuped,
                           latency_breaches, look, msprt_p, power)


def users(n: int, rng: np.random.Generator, ctr: float = 0.06) -> UserData:
    """Users whose click propensity persists: the pre-period predicts the experiment period."""
    propensity = rng.beta(2.0, 2.0 * (1 - ctr) / ctr, n)
    pre_n, n_ = 1 + rng.poisson(40, n), 1 + rng.poisson(40, n)
    return UserData(rng.binomial(n_, propensity), n_, rng.binomial(pre_n, propensity), pre_n)


def test_absolute_lift_and_its_interval():
    c = ArmSummary(users=100, impressions=1000, clicks=100, ctr=0.10, se=0.01)
    t = ArmSummary(users=100, impressions=1000, clicks=120, ctr=0.12, se=0.01)
    r = compare(c, t)
    assert r.diff == pytest.approx(0.02)
    assert r.diff_ci_high - r.diff == pytest.approx(1.959964 * np.sqrt(2e-4), rel=1e-5)
    # p belongs to the relative lift beside it (components.ab.stats.compare), not to this scale.
    assert r.p_value == pytest.approx(2 * stats.norm.sf(r.lift / r.se_lift))


def test_cuped_without_a_useful_covariate_changes_nothing():
    rng = np.random.default_rng(1)
    d = {a: users(500, rng) for a in ("control", "treatment")}
    blank = {a: UserData(x.clicks, x.impressions, np.zeros(500), np.zeros(500)) for a, x in d.items()}
    fit = cuped(blank)
    assert fit.theta == 0.0
    for a, x in d.items():
        plain = ctr_summary(x.clicks, x.impressions)
        assert fit.arms[a].ctr == pytest.approx(plain.ctr)
        assert fit.arms[a].se == pytest.approx(plain.se)


def test_cuped_reduces_variance_and_stays_unbiased():
    rng = np.random.default_rng(2)
    diffs, plain_diffs, se2, reductions = [], [], [], []
    for _ in range(800):
        d = {a: users(400, rng) for a in ("control", "treatment")}
        row = look(d, {"control": 50, "treatment": 50}, "control")["treatment"]
        diffs.append(row["cuped_diff"])
        plain_diffs.append(row["diff"])
        se2.append(((row["cuped_diff_ci_high"] - row["cuped_diff"]) / 1.959964) ** 2)
        reductions.append(row["cuped_variance_reduction"])
    # A/A: CUPED centres on 0, its reported standard error matches its spread over experiments,
    # and the spread shrinks by about the reduction it reports.
    assert abs(np.mean(diffs)) < 3 * np.std(diffs) / np.sqrt(len(diffs))
    assert np.var(diffs) / np.mean(se2) == pytest.approx(1.0, abs=0.15)
    achieved = 1 - np.var(diffs) / np.var(plain_diffs)
    assert np.median(reductions) > 0.2 and achieved > 0.2
    assert achieved == pytest.approx(np.median(reductions), abs=0.1)


def test_msprt_is_conservative_at_one_look_and_rejects_big_effects():
    # at one look the always-valid p is above the fixed-horizon p
    for z in (0.5, 1.96, 3.0):
        assert msprt_p(z * 0.01, 0.01, 0.02) > 2 * stats.norm.sf(z)
    assert msprt_p(0.1, 0.01, 0.05) < 1e-6
    assert msprt_p(0.0, 0.01, 0.05) == 1.0


def test_always_valid_interval_agrees_with_its_p_value_at_each_look():
    est, se = np.array([0.05, 0.01, 0.04, np.nan]), np.array([0.02, 0.01, 0.005, 0.01])
    av = always_valid(est, se, 0.05, 0.05)
    for i in range(3):
        assert av.ci_low[i] < est[i] < av.ci_high[i]
        assert (av.p_value[i] < 0.05) == (av.ci_low[i] > 0 or av.ci_high[i] < 0)
    assert np.isnan(av.p_value[3]) and av.ever_rejected_p == np.nanmin(av.p_value[:3])


def test_always_valid_controls_false_positives_under_daily_peeking():
    rng = np.random.default_rng(3)
    looks, n = 20, 2000
    peek, valid = 0, 0
    for _ in range(n):
        # a cumulative mean of standard normal increments: the estimate after each look, H0 true
        est = np.cumsum(rng.standard_normal(looks)) / np.arange(1, looks + 1)
        se = 1 / np.sqrt(np.arange(1, looks + 1))
        peek += np.any(2 * stats.norm.sf(np.abs(est / se)) < 0.05)
        valid += always_valid(est, se, 0.5, 0.05).ever_rejected_p < 0.05    # rejected at any look
    assert peek / n > 0.15                       # peeking at a fixed-horizon p: far above alpha
    assert valid / n <= 0.05


def test_power_formula():
    assert power(0.0, 1.0) == pytest.approx(0.05)
    assert power(2.8016, 1.0) == pytest.approx(0.80, abs=1e-3)   # 1.96 + 0.84: the textbook 80 %


def test_latency_guardrail_flags_only_real_regressions():
    cfg = AnalysisConfig(p99_max_increase=0.5, p99_min_ms=1.0)
    rows = [{"arm": "control", "stage": "rank", "p99": 4.0}, {"arm": "treatment", "stage": "rank", "p99": 9.0},
            {"arm": "control", "stage": "merge", "p99": 0.1}, {"arm": "treatment", "stage": "merge", "p99": 0.4},
            {"arm": "control", "stage": "recall", "p99": 4.0}, {"arm": "treatment", "stage": "recall", "p99": 5.0}]
    breaches = latency_breaches(rows, "control", cfg)
    assert [(b.arm, b.stage) for b in breaches] == [("treatment", "rank")]   # merge: +300 % but 0.3 ms
    assert "rank p99 9.00 ms vs control 4.00 ms (+125%)" in str(breaches[0])
