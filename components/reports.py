"""Daily reports from the logs: A/B statistics per arm, latency percentiles per arm and stage."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from components.ab import AnalysisConfig, UserData, always_valid_lift, look
from components.contracts import SCHEMAS, STAGES
from components.lake import Lake, MissingPartitionError

LOOK_KEYS = ("lift", "lift_ci_low", "lift_ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_value")


def per_user_days(lake: Lake, day: int, experiment: str, arms: list[str],
                  exclude_users: Sequence[int] = ()) -> pd.DataFrame:
    """Requests, impressions and clicks of each user of `experiment` per day and arm, days <= `day`."""
    arm_list = ", ".join(f"'{a}'" for a in arms)
    skip = f"AND user_id NOT IN ({', '.join(map(str, map(int, exclude_users)))})" if len(exclude_users) else ""
    with lake.connect() as con:
        return con.sql(f"""
            SELECT r.day, r.arm, r.user_id, count(DISTINCT r.request_id) AS requests,
                   coalesce(sum(i.n), 0)::BIGINT AS impressions, coalesce(sum(i.c), 0)::BIGINT AS clicks
            FROM (SELECT * FROM requests WHERE day <= {day} AND experiment = '{experiment}'
                  AND arm IN ({arm_list}) {skip}) r
            LEFT JOIN (SELECT request_id, count(*) AS n, count(*) FILTER (WHERE clicked) AS c
                       FROM impressions WHERE day <= {day} GROUP BY request_id) i USING (request_id)
            GROUP BY r.day, r.arm, r.user_id
            ORDER BY r.day, r.arm, r.user_id
        """).df()


def pre_period(lake: Lake, day: int | None) -> pd.DataFrame:
    """Each user's clicks and impressions on `day` (the bootstrap day): the CUPED covariate."""
    if day is None or not lake.has("impressions", day):
        return pd.DataFrame({"user_id": pd.Series([], dtype="int64"), "pre_clicks": pd.Series([], dtype="int64"),
                             "pre_impressions": pd.Series([], dtype="int64")})
    with lake.connect() as con:
        return con.sql(f"""SELECT user_id, count(*) FILTER (WHERE clicked)::BIGINT AS pre_clicks,
                                  count(*)::BIGINT AS pre_impressions
                           FROM impressions WHERE day = {day} GROUP BY user_id ORDER BY user_id""").df()


def user_data(rows: pd.DataFrame, pre: pd.DataFrame, arms: list[str]) -> dict[str, UserData]:
    """Per-user totals over `rows` (any days), with the covariate joined (0 for users without one)."""
    totals = rows.groupby(["arm", "user_id"], as_index=False)[["impressions", "clicks"]].sum()
    totals = totals.merge(pre, on="user_id", how="left").fillna({"pre_clicks": 0, "pre_impressions": 0})
    out = {}
    for arm in arms:
        t = totals[totals["arm"] == arm]
        out[arm] = UserData(t["clicks"].to_numpy(float), t["impressions"].to_numpy(float),
                            t["pre_clicks"].to_numpy(float), t["pre_impressions"].to_numpy(float))
    return out


def ab_daily(lake: Lake, day: int, experiment: str, shares: Mapping[str, float], control: str, *,
             layer: str = "", exclude_users: Sequence[int] = (), covariate_day: int | None = None,
             analysis: AnalysisConfig = AnalysisConfig()) -> pa.Table:
    """Per-arm CTR of the day and of all the experiment's days so far: delta-method intervals, lift
    over control (relative and absolute), SRM, CUPED on `covariate_day`, and the always-valid mSPRT.

    `exclude_users` (forced users) are not randomised, so they stay out of every statistic.
    """
    arms = list(shares)
    rows = per_user_days(lake, day, experiment, arms, exclude_users)
    pre = pre_period(lake, covariate_day if covariate_day is not None and covariate_day < day else None)
    days = sorted(int(d) for d in rows["day"].unique())
    looks = [look(user_data(rows[rows["day"] <= d], pre, arms), shares, control) for d in days]
    today = look(user_data(rows[rows["day"] == day], pre, arms), shares, control)
    cum = looks[-1] if looks and days[-1] == day else today
    requests = rows[rows["day"] == day].groupby("arm")["requests"].sum()
    out = []
    for arm in arms:
        t, c = today[arm], cum[arm]
        row = {"day": day, "experiment": experiment, "layer": layer, "arm": arm, "is_control": arm == control,
               "share": float(shares[arm]), "users": t["users"], "requests": int(requests.get(arm, 0)),
               "impressions": t["impressions"], "clicks": t["clicks"], "ctr": t["ctr"],
               "ctr_ci_low": t["ctr_ci_low"], "ctr_ci_high": t["ctr_ci_high"], "srm_p": t["srm_p"],
               **{k: t.get(k) for k in LOOK_KEYS},
               "cum_users": c["users"], "cum_impressions": c["impressions"], "cum_clicks": c["clicks"],
               "cum_ctr": c["ctr"], "cum_ctr_ci_low": c["ctr_ci_low"], "cum_ctr_ci_high": c["ctr_ci_high"],
               "cum_srm_p": c["srm_p"], **{f"cum_{k}": c.get(k) for k in LOOK_KEYS}}
        if not pre.empty:
            row |= {"cuped_ctr": c["cuped_ctr"], "cuped_ctr_ci_low": c["cuped_ctr_ci_low"],
                    "cuped_ctr_ci_high": c["cuped_ctr_ci_high"],
                    "cuped_variance_reduction": c.get("cuped_variance_reduction"),
                    **{f"cuped_{k}": c.get(f"cuped_{k}") for k in LOOK_KEYS}}
        if arm != control and looks:
            row |= {f"cum_{k}": v for k, v in always_valid_lift(looks, arm, analysis).items()}
            if not pre.empty:
                row |= always_valid_lift(looks, arm, analysis, prefix="cuped_")
        out.append(row)
    table = pa.Table.from_pylist([_finite(r) for r in out], schema=SCHEMAS["ab_daily"])
    lake.write("ab_daily", day, table)
    return table


def _finite(row: dict) -> dict:
    """NaN (an undefined statistic, e.g. no users yet) is stored as null in nullable columns."""
    required = {"ctr", "ctr_ci_low", "ctr_ci_high", "srm_p"}
    return {k: (None if k not in required and isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in row.items()}


def latency_daily(lake: Lake, day: int) -> pa.Table:
    """Wall-clock latency percentiles of each stage per arm, from the request_latency log."""
    con = lake.connect()
    parts = [f"""SELECT day, arm, '{s}' AS stage, count(*) AS requests,
                        quantile_cont({s}_ms, 0.5) AS p50, quantile_cont({s}_ms, 0.95) AS p95,
                        quantile_cont({s}_ms, 0.99) AS p99, avg({s}_ms) AS mean
                 FROM request_latency WHERE day = {day} GROUP BY day, arm""" for s in STAGES]
    if lake.has("update_latency", day):    # an incremental arm's model updates, one row each
        parts.append(f"""SELECT day, arm, 'update' AS stage, count(*) AS requests,
                                quantile_cont(total_ms, 0.5) AS p50, quantile_cont(total_ms, 0.95) AS p95,
                                quantile_cont(total_ms, 0.99) AS p99, avg(total_ms) AS mean
                         FROM update_latency WHERE day = {day} GROUP BY day, arm""")
    table = con.sql(" UNION ALL ".join(parts) + " ORDER BY arm, stage").to_arrow_table()
    con.close()
    lake.write("latency_daily", day, table)
    return table


def channel_latency_daily(lake: Lake, day: int) -> pa.Table:
    """Wall-clock recall time percentiles of each channel per arm, from request_channel_latency."""
    with lake.connect() as con:
        table = con.sql(f"""SELECT day, arm, channel, count(*) AS requests, quantile_cont(ms, 0.5) AS p50,
                                   quantile_cont(ms, 0.95) AS p95, quantile_cont(ms, 0.99) AS p99, avg(ms) AS mean
                            FROM request_channel_latency WHERE day = {day}
                            GROUP BY day, arm, channel ORDER BY arm, channel""").to_arrow_table()
    lake.write("channel_latency_daily", day, table)
    return table


# Per day and arm: the share of impressions and of clicks that went to items which arrived that day
# (created_day == day), from the logs and the catalog the recommender sees. Null without clicks.
NEW_ITEM_SQL = """
    SELECT i.day, i.arm,
           count(*) FILTER (WHERE c.created_day = i.day) / count(*) AS new_impression_share,
           CASE WHEN count(*) FILTER (WHERE i.clicked) > 0
                THEN count(*) FILTER (WHERE i.clicked AND c.created_day = i.day)
                     / count(*) FILTER (WHERE i.clicked) END AS new_click_share
    FROM impressions i LEFT JOIN (SELECT item_id, created_day FROM items) c USING (item_id)
    {where} GROUP BY i.day, i.arm"""


def new_item_shares(lake: Lake, day: int) -> dict[str, dict[str, float | None]]:
    """Arm -> the day's new_impression_share and new_click_share (items that arrived that day)."""
    with lake.connect() as con:
        rows = con.sql(NEW_ITEM_SQL.format(where=f"WHERE i.day = {int(day)}")).fetchall()
    return {arm: {"new_impression_share": imp, "new_click_share": clk} for _, arm, imp, clk in rows}


# What a day's summary joins: until a day has all three, nothing can be summarised.
SUMMARY_TABLES = ("ab_daily", "world_daily", "latency_daily")
# ... and what its new-item shares count. A lost partition of any of these would drop the day's
# row (inner joins) or bend its shares (a left join), silently: each reported day needs them all.
SUMMARY_INPUTS = (*SUMMARY_TABLES[1:], "impressions", "items")


def _require_summary_inputs(lake: Lake, days: list[int] | None) -> None:
    missing = [t for t in SUMMARY_TABLES if not lake.days(t)]
    if missing:
        data_dir = lake.root.parent      # <data dir>/lake
        raise MissingPartitionError(
            f"{data_dir} holds no reported day ({', '.join(missing)} not in {lake.root}): is it a "
            f"campaign's data directory? Start one there, or resume one that was stopped, with "
            f"`reclab campaign --data-dir {data_dir}`")
    reported = lake.days("ab_daily")
    if days is None:
        # The whole report: days are reported in order, so a gap before the last reported day is a
        # lost partition (a campaign stopped mid-day just has not reported its last day yet). A
        # campaign summarising the days it ran asks for those only: a lost day is one it re-runs.
        lake.require("ab_daily", range(reported[0], reported[-1] + 1))
    for table in SUMMARY_INPUTS:
        lake.require(table, [d for d in reported if days is None or d in days])


def summary_rows(lake: Lake, days: list[int] | None = None) -> list[dict]:
    """CTR, its interval and reference CTRs, total latency and the new items' share of impressions
    and clicks, per arm and day, for printing."""
    # Every partition verified first: a damaged one is the more precise message. No connection is
    # held while refusing (one kept alive in a failed run's state makes DuckDB warn of leaks at exit).
    lake.connect().close()
    _require_summary_inputs(lake, days)
    con = lake.connect()
    day_list = ",".join(map(str, days)) if days else ""
    # A lake written before exposure_daily existed has no such view: its columns come out null.
    exposure = ("exposure_daily" if lake.days("exposure_daily") else
                "(SELECT NULL::INT AS day, NULL AS arm, NULL AS items_shown, NULL AS items_clicked, NULL AS gini, "
                "NULL AS top1pct_share, NULL AS personalised_share WHERE false)")
    where = f"WHERE a.day IN ({day_list})" if days else ""
    rows = con.sql(f"""
        SELECT a.day, a.arm, a.requests, a.ctr, a.ctr_ci_low, a.ctr_ci_high, a.lift, a.p_value,
               w.ctr_expected, w.ctr_oracle, w.ctr_random, l.p50, l.p99, n.new_impression_share, n.new_click_share,
               e.items_shown, e.items_clicked, e.gini, e.top1pct_share, e.personalised_share
        FROM ab_daily a
        JOIN world_daily w USING (day, arm)
        JOIN (SELECT * FROM latency_daily WHERE stage = 'total') l USING (day, arm)
        LEFT JOIN ({NEW_ITEM_SQL.format(where=f"WHERE i.day IN ({day_list})" if days else "")}) n USING (day, arm)
        LEFT JOIN {exposure} e USING (day, arm)
        {where} ORDER BY a.day, a.is_control DESC, a.arm
    """).fetchall()
    cols = ["day", "arm", "requests", "ctr", "ctr_ci_low", "ctr_ci_high", "lift", "p_value",
            "ctr_expected", "ctr_oracle", "ctr_random", "p50", "p99", "new_impression_share", "new_click_share",
            "items_shown", "items_clicked", "gini", "top1pct_share", "personalised_share"]
    con.close()
    return [dict(zip(cols, r)) for r in rows]


def normalised(ctr: float, random: float, oracle: float) -> float:
    """Where a CTR sits between random (0) and oracle (1)."""
    return float((ctr - random) / (oracle - random)) if oracle > random else float(np.nan)
