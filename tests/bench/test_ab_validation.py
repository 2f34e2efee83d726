"""The A/B statistics checked against the simulator's truth (bench/ab_validation.py, scaled down)."""
from __future__ import annotations

import numpy as np
import pytest

from bench.ab_validation import aa_study, power_study, srm_study, validation_world


@pytest.fixture(scope="module")
def aa():
    return aa_study(500, 1, validation_world())


def test_aa_false_positives_are_at_alpha(aa):
    assert 0.03 <= aa["fp_share"] <= 0.07, aa
    assert 0.03 <= aa["fp_share_cuped"] <= 0.07, aa


def test_aa_p_values_are_uniform(aa):
    # Kolmogorov-Smirnov against U(0, 1): a miscalibrated variance bends the distribution.
    assert aa["ks_p"] > 0.01, aa
    assert aa["ks_p_cuped"] > 0.01, aa


def test_a_correct_split_is_not_flagged(aa):
    assert aa["srm_flagged"] <= 0.01, aa


def test_peeking_inflates_false_positives_and_always_valid_does_not():
    peek = aa_study(200, 4, validation_world())
    assert peek["fp_share_peeking"] > peek["fp_share"]          # stopping at the first p < 0.05 day
    assert peek["fp_share_always_valid"] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200), peek


def test_known_effect_is_detected_with_the_predicted_power(aa):
    res = power_study(300, 1, 0.1, validation_world(), aa["se_diff"])
    assert 0.3 < res["predicted_power"] < 0.9, res            # an informative power, not 0 or 1
    # Within three sampling standard deviations, plus a little for the planned SE being an estimate.
    assert abs(res["measured_power"] - res["predicted_power"]) < 3 * res["sampling_sd"] + 0.03, res


def test_an_injected_52_48_split_is_flagged_by_srm():
    res = srm_study()
    assert res["srm_p_52_48"] < 0.001, res
    assert res["srm_p_fair"] > 0.001, res
