"""Models updated within the day against daily-only, in the worlds where freshness should matter.

Per scenario (default `drift` and `cold-start`) a campaign of the `incremental` experiment runs
through the story for `--days` days (day 0 the logging policy, then A/B days): both arms serve the
same channels and DeepFM from the same daily training; the incremental arm's own copies also learn
from the day's stream every K micro-batches (components/serving/incremental.py). From the lake:
the pooled CTR lift of the incremental arm over the experiment's days with its delta-method
interval and p-value (ab_daily's cumulative columns, components/ab/stats.py, users as the unit), the
world's expected CTR of the served slates (world_daily), the share of clicks on items that arrived
that day, and the cost of an update (update_latency: wall clock per update) beside each arm's
serving p99. Writes key "incremental" of bench/online.json (read, merged, written: other scripts
own the other keys) and a section of bench/RESULTS.md.

    python -m bench.online_incremental [--scenarios drift cold-start] [--days 4] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.online_admission import OUT

CONTROL, TREATMENT = "daily", "incremental"


def run_campaign(data_dir: Path, scenario: str, days: int, experiment=None):
    """`days` days of the `incremental` preset (or `experiment`), trained and reported each day."""
    from bench.days import serve_day, train_day
    from components.experiment import load_experiment
    from sim.config import load_scenario
    from story.campaign import create_campaign
    from story.report import report_day

    shutil.rmtree(data_dir, ignore_errors=True)
    c = create_campaign(data_dir, f"bench-incremental-{scenario}", load_scenario(scenario),
                        experiment or load_experiment("incremental"), None)
    for day in range(days):
        t = time.perf_counter()
        serve_day(c, day)
        train_day(c, day)
        report_day(c, day)
        print(f"{scenario} day {day}: {time.perf_counter() - t:.0f} s", flush=True)
    return c


def figures(lake, days: int) -> dict:
    last, ab_days = days - 1, f"day BETWEEN 1 AND {days - 1}"
    with lake.connect() as con:
        ab = {r[0]: r[1:] for r in con.sql(
            f"SELECT arm, cum_ctr, cum_lift, cum_lift_ci_low, cum_lift_ci_high, cum_p_value, cum_users, "
            f"cum_impressions, cum_clicks FROM ab_daily WHERE day = {last}").fetchall()}
        expected = dict(con.sql(f"SELECT arm, sum(ctr_expected * requests) / sum(requests) FROM world_daily "
                                f"WHERE {ab_days} GROUP BY arm").fetchall())
        new = dict(con.sql(f"""SELECT i.arm, count(*) FILTER (WHERE i.clicked AND c.created_day = i.day)
                                          / count(*) FILTER (WHERE i.clicked)
                               FROM impressions i JOIN (SELECT item_id, min(created_day) AS created_day
                                                        FROM items GROUP BY item_id) c USING (item_id)
                               WHERE i.{ab_days} GROUP BY i.arm""").fetchall())
        p99 = dict(con.sql(f"SELECT arm, avg(p99) FROM latency_daily WHERE stage = 'total' AND {ab_days} "
                           f"GROUP BY arm").fetchall())
        upd = con.sql(f"""SELECT count(*), avg(total_ms), quantile_cont(total_ms, 0.5), quantile_cont(total_ms, 0.99),
                                 avg(ranker_ms), avg(channels_ms), avg(impressions), avg(clicks)
                          FROM update_latency WHERE {ab_days}""").fetchall()[0]
    t = ab[TREATMENT]
    r = lambda v, n=4: None if v is None else round(float(v), n)  # noqa: E731
    return {
        "lift": r(t[1]), "ci": [r(t[2]), r(t[3])], "p_value": r(t[4]), "ab_days": list(range(1, days)),
        "ctr": {arm: r(ab[arm][0], 5) for arm in (CONTROL, TREATMENT)},
        "users": {arm: int(ab[arm][5]) for arm in (CONTROL, TREATMENT)},
        "clicks": {arm: int(ab[arm][7]) for arm in (CONTROL, TREATMENT)},
        "ctr_expected": {arm: r(expected[arm], 5) for arm in (CONTROL, TREATMENT)},
        "new_click_share": {arm: r(new.get(arm)) for arm in (CONTROL, TREATMENT)},
        "serving_p99_ms": {arm: r(p99[arm], 2) for arm in (CONTROL, TREATMENT)},
        "update": {"updates": int(upd[0]), "mean_ms": r(upd[1], 2), "p50_ms": r(upd[2], 2), "p99_ms": r(upd[3], 2),
                   "ranker_mean_ms": r(upd[4], 2), "channels_mean_ms": r(upd[5], 2),
                   "impressions_per_update": r(upd[6], 1), "clicks_per_update": r(upd[7], 1)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=["drift", "cold-start"])
    p.add_argument("--days", type=int, default=4, help="days per campaign, day 0 (logging policy) included")
    p.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    if args.days < 2:
        p.error("--days must be at least 2 (the bootstrap day and an A/B day)")
    from bench.results import append, conditions, conditions_note, write_json_key
    from sim.config import load_scenario

    for s in args.scenarios:
        load_scenario(s)        # a wrong name stops here, before any campaign runs
    load = os.getloadavg()
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="reclab-incremental-"))
    out = {}
    for scenario in args.scenarios:
        t = time.perf_counter()
        c = run_campaign(root / scenario, scenario, args.days)
        out[scenario] = {**figures(c.lake, args.days), "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(out[scenario], indent=2), flush=True)
    cond = conditions(load)
    write_json_key(OUT, "incremental", {**out, "conditions": cond})
    if args.no_results:
        return 0
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    rows = [[s, f"{f['ctr'][CONTROL]:.5f}", f"{f['ctr'][TREATMENT]:.5f}", f"{f['lift']:+.1%}",
             f"[{f['ci'][0]:+.1%}, {f['ci'][1]:+.1%}]", f"{f['p_value']:.4f}",
             f"{f['ctr_expected'][CONTROL]:.5f}", f"{f['ctr_expected'][TREATMENT]:.5f}",
             pct(f["new_click_share"][CONTROL]), pct(f["new_click_share"][TREATMENT]),
             f"{f['update']['updates']}", f"{f['update']['mean_ms']:.2f} ms", f"{f['update']['p99_ms']:.2f} ms",
             f"{f['serving_p99_ms'][CONTROL]:.2f} ms", f"{f['serving_p99_ms'][TREATMENT]:.2f} ms"]
            for s, f in out.items()]
    every = json.dumps({"every": 4})
    append("Intra-day incremental updates against daily-only (the `incremental` experiment)",
           ["scenario", "CTR daily", "CTR incremental", "pooled lift", "95 % CI", "p", "E[CTR] daily",
            "E[CTR] incremental", "new-item clicks daily", "new-item clicks incremental", "updates",
            "update mean", "update p99", "serving p99 daily", "serving p99 incremental"], rows,
           notes=f"figures in bench/online.json (key incremental); {args.days}-day campaigns (day 0 the logging "
                 f"policy, A/B days 1-{args.days - 1}) of configs/experiments/incremental.yaml ({every}: an update "
                 f"every 4 micro-batches, an hour); lift and interval: ab_daily's cumulative delta-method lift "
                 f"of the incremental arm, users as the unit; E[CTR]: the world's expected CTR of the served "
                 f"slates; new-item clicks: share of clicks on items that arrived that day; update: wall clock "
                 f"per update (update_latency), outside the request path; serving p99: mean over days of "
                 f"latency_daily's total p99. " + conditions_note(cond))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
