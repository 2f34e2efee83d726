"""components/exposure.py: distinct items, concentration and personalisation of each arm's exposure."""
from __future__ import annotations

import numpy as np
import pytest

from components.exposure import exposure_daily, gini
from components.lake import Lake
from tests.components.test_reports_new_items import write_impressions, write_items


def test_gini_is_zero_when_even_and_near_one_when_one_item_takes_all():
    assert gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 10])) == pytest.approx(0.9)
    assert gini(np.zeros(3)) == 0.0


def test_exposure_daily_per_arm(tmp_path):
    lake = Lake(tmp_path / "lake")
    write_items(lake, 0, list(range(20)))
    # Arm "same" shows items 0 and 1 to everyone; arm "wide" shows ten different items.
    rows = [("same", i % 2, i == 0) for i in range(10)] + [("wide", 2 + i, i < 3) for i in range(10)]
    write_impressions(lake, 0, rows)
    table = {r["arm"]: r for r in exposure_daily(lake, 0).to_pylist()}
    assert lake.has("exposure_daily", 0)
    same, wide = table["same"], table["wide"]
    assert (same["items_shown"], same["items_clicked"], wide["items_shown"], wide["items_clicked"]) == (2, 1, 10, 3)
    assert same["catalogue"] == wide["catalogue"] == 20
    assert same["gini"] > wide["gini"]
    # The day's most shown item (K = 1: every slate here has one position) is one of arm "same"'s.
    assert same["personalised_share"] == pytest.approx(0.5)
    assert wide["personalised_share"] == pytest.approx(1.0)
    assert same["top1pct_share"] == pytest.approx(0.5) and wide["top1pct_share"] == pytest.approx(0.1)
