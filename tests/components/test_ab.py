"""components/ab: the splitter and the statistics of CTR experiments."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from components.ab import BUCKETS, ArmSummary, Splitter, SplitError, compare, ctr_summary, srm_pvalue

USERS = np.arange(20_000, dtype=np.int64)


# ---- splitter --------------------------------------------------------------------------------

def test_assignment_is_sticky():
    s = Splitter("exp-1", {"control": 50, "treatment": 50})
    a = s.assign(USERS[:2000])
    np.testing.assert_array_equal(a, s.assign(USERS[:2000]))
    np.testing.assert_array_equal(a, Splitter("exp-1", {"control": 50, "treatment": 50}).assign(USERS[:2000]))
    # a user's arm does not depend on who else is in the batch, or in what order
    np.testing.assert_array_equal(s.assign(USERS[:2000][::-1]), a[::-1])
    np.testing.assert_array_equal(s.assign(USERS[7:8]), a[7:8])


def test_buckets_are_in_range():
    b = Splitter("x", {"a": 100}).bucket(USERS[:5000])
    assert b.min() >= 0 and b.max() < BUCKETS


@pytest.mark.parametrize("shares", [{"a": 50, "b": 50}, {"a": 50, "b": 30, "c": 20}, {"a": 10, "b": 90}])
def test_assignment_matches_the_shares(shares):
    arms = Splitter("exp-2", shares).assign(USERS)
    n = len(USERS)
    for arm, share in shares.items():
        p = share / 100
        count = int((arms == arm).sum())
        assert abs(count - n * p) < 4.5 * np.sqrt(n * p * (1 - p)), (arm, count)
    assert set(arms.tolist()) == set(shares)


def test_an_arm_with_no_share_gets_no_users():
    arms = Splitter("exp-3", {"a": 0, "b": 100, "c": 0}).assign(USERS[:3000])
    assert set(arms.tolist()) == {"b"}


def test_different_salts_assign_independently():
    a = Splitter("layer-1", {"x": 50, "y": 50}).assign(USERS) == "x"
    b = Splitter("layer-2", {"x": 50, "y": 50}).assign(USERS) == "x"
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    assert stats.chi2_contingency(table).pvalue > 0.001
    agree = np.mean(a == b)
    assert abs(agree - 0.5) < 4.5 * np.sqrt(0.25 / len(USERS))


@pytest.mark.parametrize("shares, fragment", [
    ({"a": 50, "b": 40}, "sum to 100"),
    ({"a": 60, "b": 60}, "sum to 100"),
    ({"a": 120, "b": -20}, "between 0 and 100"),
    ({}, "at least one arm"),
])
def test_bad_shares_are_refused(shares, fragment):
    with pytest.raises(SplitError, match=fragment):
        Splitter("s", shares)


# ---- ctr_summary -------------------------------------------------------------------------------

def user_logs(n_users: int, ctr: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-user impressions and clicks; users differ in how much they click (Beta around ctr)."""
    impressions = 1 + rng.poisson(6, n_users)
    p = rng.beta(2.0, 2.0 * (1 - ctr) / ctr, n_users)
    return rng.binomial(impressions, p), impressions


def test_ctr_summary_counts_and_ratio():
    s = ctr_summary(np.array([1, 0, 3]), np.array([10, 5, 15]))
    assert (s.users, s.impressions, s.clicks) == (3, 30, 4)
    assert s.ctr == pytest.approx(4 / 30)
    lo, hi = s.ci
    assert lo < s.ctr < hi and hi - s.ctr == pytest.approx(s.ctr - lo)


def test_ctr_summary_degenerate_inputs():
    assert np.isnan(ctr_summary(np.array([]), np.array([])).ctr)
    assert np.isnan(ctr_summary(np.array([0, 0]), np.array([0, 0])).ctr)
    one = ctr_summary(np.array([2]), np.array([8]))
    assert one.ctr == 0.25 and np.isnan(one.se)


def test_delta_method_se_matches_the_bootstrap():
    rng = np.random.default_rng(42)
    clicks, impressions = user_logs(2000, 0.08, rng)
    s = ctr_summary(clicks, impressions)
    idx = rng.integers(0, len(clicks), size=(600, len(clicks)))                       # [R, N]
    boot = clicks[idx].sum(axis=1) / impressions[idx].sum(axis=1)
    assert s.se == pytest.approx(boot.std(ddof=1), rel=0.15)
    # and the naive binomial SE (impressions as independent) is smaller: users cluster clicks
    naive = np.sqrt(s.ctr * (1 - s.ctr) / s.impressions)
    assert naive < s.se


# ---- compare -----------------------------------------------------------------------------------

def test_compare_lift_against_hand_computed_values():
    c = ArmSummary(users=100, impressions=1000, clicks=100, ctr=0.10, se=0.01)
    t = ArmSummary(users=100, impressions=1000, clicks=120, ctr=0.12, se=0.01)
    r = compare(c, t)
    assert r.lift == pytest.approx(0.2)
    se_lift = np.sqrt(0.01**2 / 0.1**2 + 0.12**2 * 0.01**2 / 0.1**4)
    assert r.ci_low == pytest.approx(0.2 - 1.959964 * se_lift, rel=1e-5)
    assert r.ci_high == pytest.approx(0.2 + 1.959964 * se_lift, rel=1e-5)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(0.2 / se_lift))


def test_p_and_the_lift_interval_agree_near_the_boundary():
    # Control's noise counts more in the ratio than in the difference: here the absolute z-test
    # gave p = 0.0495 beside a lift interval of -2 % to +42 %.
    c = ArmSummary(users=1000, impressions=10000, clicks=1000, ctr=0.10, se=0.0072)
    t = ArmSummary(users=1000, impressions=10000, clicks=1200, ctr=0.12, se=0.0072)
    r = compare(c, t)
    assert r.ci_low < 0 < r.ci_high and r.p_value > 0.05
    # Across the boundary, from both sides and for either sign of the lift.
    for rt in np.linspace(0.07, 0.13, 241):
        for se in (0.003, 0.0072, 0.012):
            r = compare(c, ArmSummary(1000, 10000, int(rt * 10000), float(rt), se))
            if rt == pytest.approx(0.10):
                continue
            excludes_zero = r.ci_low > 0 or r.ci_high < 0
            assert (r.p_value < 0.05) == excludes_zero, (rt, se, r)
    # Exactly on the boundary (both arms' SE chosen so the interval ends at 0): p is 0.05, and a
    # hair either side both flip together.
    edge = 0.2 / (1.959963984540054 * np.sqrt(1 / 0.1**2 + 0.12**2 / 0.1**4))
    for se, significant in ((edge, None), (edge * (1 - 1e-6), True), (edge * (1 + 1e-6), False)):
        r = compare(ArmSummary(1000, 10000, 1000, 0.10, se), ArmSummary(1000, 10000, 1200, 0.12, se))
        if significant is None:
            assert r.ci_low == pytest.approx(0.0, abs=1e-12) and r.p_value == pytest.approx(0.05, rel=1e-9)
        else:
            assert (r.p_value < 0.05) is significant and (r.ci_low > 0) is significant


def test_control_without_clicks_has_no_relative_lift_nor_p():
    c = ArmSummary(users=50, impressions=500, clicks=0, ctr=0.0, se=0.0)
    t = ArmSummary(users=50, impressions=500, clicks=5, ctr=0.01, se=0.004)
    r = compare(c, t)
    assert np.isnan(r.lift) and np.isnan(r.p_value)
    assert r.diff == pytest.approx(0.01) and r.diff_ci_low < 0.01 < r.diff_ci_high


def test_equal_arms_give_uniform_p_values():
    rng = np.random.default_rng(7)
    p = np.array([compare(ctr_summary(*user_logs(300, 0.06, rng)), ctr_summary(*user_logs(300, 0.06, rng))).p_value
                  for _ in range(300)])
    assert 0.01 < np.mean(p < 0.05) < 0.10
    assert stats.kstest(p, "uniform").pvalue > 0.001


def test_a_large_effect_is_significant_and_its_lift_is_covered():
    rng = np.random.default_rng(8)
    c = ctr_summary(*user_logs(3000, 0.05, rng))
    t = ctr_summary(*user_logs(3000, 0.075, rng))
    r = compare(c, t)
    assert r.p_value < 1e-6
    assert r.ci_low > 0
    assert r.ci_low < 0.5 < r.ci_high           # the true lift: 0.075 / 0.05 - 1


# ---- SRM ---------------------------------------------------------------------------------------

def test_srm_flags_a_52_48_split():
    assert srm_pvalue({"a": 10_400, "b": 9_600}, {"a": 50, "b": 50}) < 0.001


def test_srm_accepts_a_fair_split():
    assert srm_pvalue({"a": 10_000, "b": 10_000}, {"a": 50, "b": 50}) == pytest.approx(1.0)
    arms = Splitter("srm", {"a": 50, "b": 50}).assign(USERS)
    counts = {arm: int((arms == arm).sum()) for arm in ("a", "b")}
    assert srm_pvalue(counts, {"a": 50, "b": 50}) > 0.001
    assert srm_pvalue({"a": 7_000, "b": 3_000}, {"a": 70, "b": 30}) == pytest.approx(1.0)


def test_srm_against_unequal_shares_and_edge_cases():
    assert srm_pvalue({"a": 10_000, "b": 10_000}, {"a": 70, "b": 30}) < 1e-10
    assert srm_pvalue({"a": 100}, {"a": 100}) == 1.0                      # one arm: nothing to test
    assert srm_pvalue({}, {"a": 50, "b": 50}) == 1.0                       # no users yet
    # an arm of share 0 is left out of the test
    assert srm_pvalue({"a": 500, "b": 500, "c": 0}, {"a": 50, "b": 50, "c": 0}) == pytest.approx(1.0)
