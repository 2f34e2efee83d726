"""bench.online_admission's pure parts: the --thresholds list and the halving threshold's bracket."""
from __future__ import annotations

import pytest

from bench.online_admission import halving, parse_thresholds


def test_thresholds_parse_sorted_with_the_baseline_or_refuse_in_one_line():
    assert parse_thresholds("100,1,75,80,75") == (1, 75, 80, 100)
    for bad, match in (("70,80", "including 1"), ("1,x", "comma-separated integers"), ("0,1", "positive")):
        with pytest.raises(ValueError, match=match):
            parse_thresholds(bad)


def test_halving_is_the_smallest_threshold_at_half_the_rows_and_the_largest_below_it_brackets_it():
    def row(t, rows, auc, evict=0, seed=0):
        return {"threshold": t, "evict_days": evict, "seed": seed, "rows": rows, "auc": auc, "gauc": auc}

    rows = [row(1, 1000, 0.60), row(70, 620, 0.59), row(80, 510, 0.58), row(90, 480, 0.57), row(100, 230, 0.55),
            row(1, 1000, 0.61, seed=1), row(1, 900, 0.60, evict=1), row(100, 230, 0.55, evict=1)]
    out = halving(rows)
    assert out["evict_0"]["threshold"] == 90 and out["evict_0"]["row_share"] == 0.48
    assert out["evict_0"]["auc_cost"] == pytest.approx(0.03)
    assert out["below_evict_0"]["threshold"] == 80 and out["below_evict_0"]["row_share"] == 0.51
    assert out["evict_1"]["threshold"] == 100 and "below_evict_1" in out and out["seed_noise_auc"] == 0.01
