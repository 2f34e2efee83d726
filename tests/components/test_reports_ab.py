"""components/reports.ab_daily on a hand-built lake: who is counted, and what each column means."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components import reports
from components.ab import compare, ctr_summary
from components.lake import Lake


def write_day(lake: Lake, day: int, rows: list[tuple[int, str, str, int, int]]) -> None:
    """rows: (user, experiment, arm, impressions, clicks), one request each."""
    n = len(rows)
    rid = day * 1000 + np.arange(n)
    lake.write("requests", day, pa.table({
        "day": np.full(n, day, np.int32), "ts": rid, "request_id": rid, "user_id": [r[0] for r in rows],
        "experiment": [r[1] for r in rows], "layer": ["L"] * n, "arm": [r[2] for r in rows]}))
    imp = [(rid[i], r[0], r[2], k < r[4]) for i, r in enumerate(rows) for k in range(r[3])]
    m = len(imp)
    lake.write("impressions", day, pa.table({
        "day": np.full(m, day, np.int32), "ts": [x[0] for x in imp], "request_id": [x[0] for x in imp],
        "user_id": [x[1] for x in imp], "item_id": np.zeros(m, np.int64), "position": np.zeros(m, np.int32),
        "arm": [x[2] for x in imp], "channels": [["popular"]] * m, "recall_ranks": [[0]] * m, "score": np.zeros(m, np.float32),
        "clicked": [x[3] for x in imp]}))


@pytest.fixture
def lake(tmp_path) -> Lake:
    rng = np.random.default_rng(0)
    lake = Lake(tmp_path / "lake")
    users = np.arange(400)
    write_day(lake, 0, [(int(u), "bootstrap", "logging", 10, int(rng.binomial(10, 0.02 + 0.4 * (u % 2))))
                        for u in users])
    for day in (1, 2):
        rows = [(int(u), "exp", "control" if u < 200 else "treatment", 10,
                 int(rng.binomial(10, 0.02 + 0.4 * (u % 2)))) for u in users]
        rows += [(999, "exp", "treatment", 10, 10),                  # a forced test account
                 (1000 + day, "none", "holdout", 10, 0)]             # held out of the experiment
        write_day(lake, day, rows)
    lake.refresh_catalog()
    return lake


def test_ab_daily_counts_randomised_users_only(lake):
    t = reports.ab_daily(lake, 2, "exp", {"control": 50, "treatment": 50}, "control", layer="L",
                         exclude_users=[999], covariate_day=0).to_pandas().set_index("arm")
    assert list(t.index) == ["control", "treatment"]
    assert t.loc["treatment", "users"] == 200 and t.loc["treatment", "cum_users"] == 200
    assert t.loc["treatment", "cum_impressions"] == 2 * 200 * 10
    assert (t["layer"] == "L").all()
    assert t.loc["control", "lift"] is None or np.isnan(t.loc["control", "lift"])


def test_cumulative_columns_pool_the_days_per_user(lake):
    t = reports.ab_daily(lake, 2, "exp", {"control": 50, "treatment": 50}, "control",
                         exclude_users=[999], covariate_day=0).to_pandas().set_index("arm")
    con = lake.connect()
    per_user = con.sql("""SELECT r.arm, r.user_id, count(*) AS n, count(*) FILTER (WHERE clicked) AS c
                          FROM impressions i JOIN requests r USING (request_id)
                          WHERE r.day IN (1, 2) AND r.experiment = 'exp' AND r.user_id <> 999
                          GROUP BY ALL""").df()
    s = {a: ctr_summary(g["c"].to_numpy(), g["n"].to_numpy()) for a, g in per_user.groupby("arm")}
    expected = compare(s["control"], s["treatment"])
    assert t.loc["treatment", "cum_ctr"] == pytest.approx(s["treatment"].ctr)
    assert t.loc["treatment", "cum_lift"] == pytest.approx(expected.lift)
    assert t.loc["treatment", "cum_p_value"] == pytest.approx(expected.p_value)
    assert t.loc["treatment", "cum_diff"] == pytest.approx(expected.diff)


def test_cuped_uses_the_bootstrap_day_and_reduces_variance(lake):
    # Users' click rates persist (odd users click more every day), so day 0 predicts days 1-2.
    t = reports.ab_daily(lake, 2, "exp", {"control": 50, "treatment": 50}, "control",
                         exclude_users=[999], covariate_day=0).to_pandas().set_index("arm")
    row = t.loc["treatment"]
    assert row["cuped_variance_reduction"] > 0.3
    assert row["cuped_lift_ci_high"] - row["cuped_lift_ci_low"] < row["cum_lift_ci_high"] - row["cum_lift_ci_low"]
    assert row["cuped_av_p_value"] >= row["cuped_p_value"]
    no_cov = reports.ab_daily(lake, 2, "exp", {"control": 50, "treatment": 50}, "control",
                              exclude_users=[999]).to_pandas().set_index("arm")
    assert no_cov["cuped_lift"].isna().all() and no_cov["cum_av_p_value"].notna().any()
