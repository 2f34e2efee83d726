"""Daily reports from the logs: A/B statistics per arm, latency percentiles per arm and stage."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from components.ab import compare, ctr_summary, srm_pvalue
from components.contracts import STAGES
from components.lake import Lake


def ab_daily(lake: Lake, day: int, experiment: str, shares: Mapping[str, float], control: str) -> pa.Table:
    """Per-arm CTR with delta-method intervals, lift over control, and the SRM p-value."""
    con = lake.connect()
    per_user = con.sql(f"""
        SELECT r.arm, r.user_id, count(DISTINCT r.request_id) AS requests,
               coalesce(sum(i.n), 0) AS impressions, coalesce(sum(i.c), 0) AS clicks
        FROM (SELECT * FROM requests WHERE day = {day}) r
        LEFT JOIN (SELECT request_id, count(*) AS n, count(*) FILTER (WHERE clicked) AS c
                   FROM impressions WHERE day = {day} GROUP BY request_id) i USING (request_id)
        GROUP BY r.arm, r.user_id
        ORDER BY r.arm, r.user_id
    """).fetchnumpy()
    con.close()
    arms = per_user["arm"]
    counts = {a: int((arms == a).sum()) for a in shares}
    srm = srm_pvalue(counts, shares)
    summary = {a: ctr_summary(per_user["clicks"][arms == a], per_user["impressions"][arms == a])
               for a in shares}
    rows = []
    for arm, s in summary.items():
        lo, hi = s.ci
        row = {"day": day, "experiment": experiment, "arm": arm, "is_control": arm == control,
               "share": float(shares[arm]), "users": s.users,
               "requests": int(per_user["requests"][arms == arm].sum()), "impressions": s.impressions,
               "clicks": s.clicks, "ctr": s.ctr, "ctr_ci_low": lo, "ctr_ci_high": hi,
               "lift": None, "lift_ci_low": None, "lift_ci_high": None, "p_value": None, "srm_p": srm}
        if arm != control and s.users and summary[control].users:
            cmp = compare(summary[control], s)
            row |= {"lift": cmp.lift, "lift_ci_low": cmp.ci_low, "lift_ci_high": cmp.ci_high,
                    "p_value": cmp.p_value}
        rows.append(row)
    table = pa.Table.from_pylist(rows)
    lake.write("ab_daily", day, table)
    return table


def latency_daily(lake: Lake, day: int) -> pa.Table:
    """Wall-clock latency percentiles of each stage per arm, from the request_latency log."""
    con = lake.connect()
    parts = [f"""SELECT day, arm, '{s}' AS stage, count(*) AS requests,
                        quantile_cont({s}_ms, 0.5) AS p50, quantile_cont({s}_ms, 0.95) AS p95,
                        quantile_cont({s}_ms, 0.99) AS p99, avg({s}_ms) AS mean
                 FROM request_latency WHERE day = {day} GROUP BY day, arm""" for s in STAGES]
    table = con.sql(" UNION ALL ".join(parts) + " ORDER BY arm, stage").to_arrow_table()
    con.close()
    lake.write("latency_daily", day, table)
    return table


def summary_rows(lake: Lake, days: list[int] | None = None) -> list[dict]:
    """CTR, its interval and reference CTRs, and total latency, per arm and day, for printing."""
    con = lake.connect()
    where = f"WHERE a.day IN ({','.join(map(str, days))})" if days else ""
    rows = con.sql(f"""
        SELECT a.day, a.arm, a.requests, a.ctr, a.ctr_ci_low, a.ctr_ci_high, a.lift, a.p_value,
               w.ctr_expected, w.ctr_oracle, w.ctr_random, l.p50, l.p99
        FROM ab_daily a
        JOIN world_daily w USING (day, arm)
        JOIN (SELECT * FROM latency_daily WHERE stage = 'total') l USING (day, arm)
        {where} ORDER BY a.day, a.is_control DESC, a.arm
    """).fetchall()
    cols = ["day", "arm", "requests", "ctr", "ctr_ci_low", "ctr_ci_high", "lift", "p_value",
            "ctr_expected", "ctr_oracle", "ctr_random", "p50", "p99"]
    con.close()
    return [dict(zip(cols, r)) for r in rows]


def normalised(ctr: float, random: float, oracle: float) -> float:
    """Where a CTR sits between random (0) and oracle (1)."""
    return float((ctr - random) / (oracle - random)) if oracle > random else float(np.nan)
