"""Generative recall in the closed loop: a campaign of the `generative` experiment on `cold-start`.

Runs `reclab campaign` (a fresh data directory), then reads its lake: per arm and A/B day the CTR
with its 95 % interval, the lift over control with its interval and p-value, and the share of
impressions and clicks that went to items which arrived that day; and the same pooled over all A/B
days (the experiment's cumulative statistics on the last day, users as the unit). Appends the table
to bench/RESULTS.md and writes bench/generative_campaign.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.results import append, conditions, conditions_note
from components.features.store import FeatureStore
from components.lake import Lake
from components.recall import CHANNELS

OUT = Path(__file__).resolve().parent / "generative_campaign.json"


def run_campaign(args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "flows", "campaign", "--scenario", args.scenario, "--experiment", args.experiment,
           "--days", str(args.days), "--data-dir", str(args.data_dir), "--fresh"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def arm_rows(lake: Lake, days: int) -> list[dict]:
    """Per A/B day and arm, then pooled over the A/B days ('1-N'), control first."""
    with lake.connect() as con:
        daily = con.sql(f"""
            WITH n AS (SELECT i.day, i.arm, count(*) AS impressions, count(*) FILTER (WHERE i.clicked) AS clicks,
                              count(*) FILTER (WHERE c.created_day = i.day) AS new_impressions,
                              count(*) FILTER (WHERE i.clicked AND c.created_day = i.day) AS new_clicks
                       FROM impressions i LEFT JOIN (SELECT item_id, created_day FROM items) c USING (item_id)
                       WHERE i.day >= 1 GROUP BY ALL)
            SELECT a.day, a.arm, a.is_control, n.impressions, n.clicks, n.new_impressions, n.new_clicks,
                   a.ctr, a.ctr_ci_low, a.ctr_ci_high, a.lift, a.lift_ci_low, a.lift_ci_high, a.p_value,
                   a.cum_ctr, a.cum_ctr_ci_low, a.cum_ctr_ci_high, a.cum_lift, a.cum_lift_ci_low,
                   a.cum_lift_ci_high, a.cum_p_value, a.cum_av_p_value, w.ctr_expected
            FROM ab_daily a JOIN n USING (day, arm) JOIN world_daily w USING (day, arm)
            WHERE a.day >= 1 ORDER BY a.day, a.is_control DESC, a.arm""").df()
    out = []
    for r in daily.to_dict("records"):
        out.append({"days": str(r["day"]), "arm": r["arm"], "impressions": r["impressions"], "clicks": r["clicks"],
                    "ctr": r["ctr"], "ctr_ci": [r["ctr_ci_low"], r["ctr_ci_high"]], "lift": r["lift"],
                    "lift_ci": [r["lift_ci_low"], r["lift_ci_high"]], "p_value": r["p_value"],
                    "new_impression_share": r["new_impressions"] / r["impressions"],
                    "new_click_share": r["new_clicks"] / r["clicks"] if r["clicks"] else None,
                    "ctr_expected": r["ctr_expected"]})
    for arm, g in daily.groupby("arm", sort=False):
        last = g[g["day"] == days].iloc[0]
        out.append({"days": f"1-{days}", "arm": arm, "impressions": int(g["impressions"].sum()),
                    "clicks": int(g["clicks"].sum()), "ctr": last["cum_ctr"],
                    "ctr_ci": [last["cum_ctr_ci_low"], last["cum_ctr_ci_high"]], "lift": last["cum_lift"],
                    "lift_ci": [last["cum_lift_ci_low"], last["cum_lift_ci_high"]], "p_value": last["cum_p_value"],
                    "av_p_value": last["cum_av_p_value"],
                    "new_impression_share": g["new_impressions"].sum() / g["impressions"].sum(),
                    "new_click_share": g["new_clicks"].sum() / g["clicks"].sum() if g["clicks"].sum() else None,
                    "ctr_expected": float((g["ctr_expected"] * g["impressions"]).sum() / g["impressions"].sum())})
    return [{k: _plain(v) for k, v in r.items()} for r in out]


def generative_new_share(data_dir: Path, day: int, users: int = 256) -> dict[str, float]:
    """What the generative channel itself recalls on `day` (models of day - 1) for a sample of users:
    the share of its candidates that arrived that day, and of requests with at least one such item.
    The lake logs slates only, so this separates what recall offers from what the ranker keeps."""
    lake = Lake(data_dir / "lake")
    store = FeatureStore.load(lake, day)
    model = CHANNELS["generative"].load(data_dir / "models" / f"day={day - 1:05d}" / "generative")
    with lake.connect() as con:
        new = [r[0] for r in con.execute(f"SELECT item_id FROM items WHERE created_day = {day}").fetchall()]
    ids = store.user_ids
    sample = np.random.default_rng(0).choice(ids, size=min(users, len(ids)), replace=False)
    items = model.recall(store.user_batch(sample), model.config.beam_width).items       # [B, W]
    is_new = np.isin(items, np.asarray(new, np.int64)) & (items >= 0)
    return {"day": day, "users": len(sample), "new_share_of_candidates": float(is_new.sum() / (items >= 0).sum()),
            "requests_with_a_new_candidate": float(is_new.any(axis=1).mean())}


def latency_rows(lake: Lake) -> list[list[str]]:
    """Per A/B day and arm: each recall channel's p50/p99 and the recall and total stages' (ms)."""
    with lake.connect() as con:
        rows = con.sql("""
            SELECT day, arm, channel AS part, p50, p99 FROM channel_latency_daily WHERE day >= 1
            UNION ALL
            SELECT day, arm, stage || ' (stage)', p50, p99 FROM latency_daily
            WHERE day >= 1 AND stage IN ('recall', 'total')
            ORDER BY day, arm, part""").fetchall()
    return [[d, arm, part, f"{p50:.1f}", f"{p99:.1f}"] for d, arm, part, p50, p99 in rows]


def _plain(v):
    """numpy scalars and NaN as JSON-friendly values (NaN, e.g. control's lift, as None)."""
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="cold-start")
    p.add_argument("--experiment", default="generative")
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=Path("data/bench-generative-campaign"))
    p.add_argument("--latency-only", action="store_true",
                   help="no new campaign: append the latency table of the one in --data-dir")
    args = p.parse_args()
    if args.latency_only:
        append_latency(args)
        return
    load_before = os.getloadavg()
    seconds = run_campaign(args)
    machine = conditions(load_before)
    rows = arm_rows(Lake(args.data_dir / "lake"), args.days)
    recalled = generative_new_share(args.data_dir, args.days)
    OUT.write_text(json.dumps({"scenario": args.scenario, "experiment": args.experiment, "days": args.days,
                               "data_dir": str(args.data_dir), "campaign_seconds": round(seconds, 1),
                               **machine, "torch_threads": torch_threads(), "serving": serving(args.data_dir),
                               "rows": rows, "generative_recall_new_items": recalled}, indent=2) + "\n")
    table = [[r["days"], r["arm"], r["impressions"], r["clicks"], fmt(r["ctr"], ".4f"),
              f"[{fmt(r['ctr_ci'][0], '.4f')}, {fmt(r['ctr_ci'][1], '.4f')}]",
              "" if r["lift"] is None else
              f"{r['lift']:+.1%} [{fmt(r['lift_ci'][0], '+.1%')}, {fmt(r['lift_ci'][1], '+.1%')}]",
              fmt(r["p_value"], ".3g"), fmt(r["new_impression_share"], ".1%"), fmt(r["new_click_share"], ".1%"),
              fmt(r["ctr_expected"], ".4f")] for r in rows]
    append(f"Generative recall in the simulator: `{args.experiment}` on `{args.scenario}`, {args.days} A/B days",
           ["days", "arm", "impressions", "clicks", "CTR", "95% CI", "lift [95% CI]", "p", "new-item impressions",
            "new-item clicks", "E[CTR]"], table,
           notes=f"campaign wall time {seconds / 60:.1f} min (day 0 bootstrap + {args.days} A/B days, training "
                 f"included); {conditions_note(machine)}; torch threads {torch_threads()}. Pooled rows ('1-{args.days}'): the experiment's cumulative statistics "
                 f"on the last day (users as the unit, fixed-horizon p). New-item shares: impressions and clicks "
                 f"on items whose created_day is the day shown. The generative channel alone, day {args.days}, "
                 f"{recalled['users']} users: {recalled['new_share_of_candidates']:.1%} of its candidates arrived "
                 f"that day, {recalled['requests_with_a_new_candidate']:.0%} of requests get at least one. "
                 f"One seed, one campaign: "
                 f"bench/generative_campaign.json holds every figure.")
    for row in table:
        print(" | ".join(map(str, row)))
    append_latency(args, machine)


def torch_threads() -> int:
    """Intra-op threads torch starts with here, as the campaign's subprocess does (same environment)."""
    import torch

    return torch.get_num_threads()


def serving(data_dir: Path) -> dict:
    """How the campaign served, from its own manifest: the micro-batch and each arm's recall."""
    manifest = json.loads((data_dir / "campaign.json").read_text())["experiment"]
    return {"serve_batch_size": manifest["serve_batch_size"],
            "parallel_recall": {arm: a["parallel_recall"] for arm, a in manifest["arms"].items()}}


def recall_note(parallel: dict[str, bool]) -> str:
    together = sorted(a for a, on in parallel.items() if on)
    apart = sorted(a for a, on in parallel.items() if not on)
    parts = ([f"{', '.join(together)} recall in parallel (parallel_recall: true; the recall stage follows the "
              "slowest channel)"] if together else [])
    parts += [f"{', '.join(apart)} recall one channel after another (the recall stage is their sum)"] if apart else []
    return "; ".join(parts)


def append_latency(args: argparse.Namespace, machine: dict | None = None) -> None:
    rows = latency_rows(Lake(args.data_dir / "lake"))
    how = serving(args.data_dir)
    if machine is None:       # --latency-only: the campaign ran earlier, maybe under another load
        recorded = json.loads(OUT.read_text()) if OUT.is_file() else {}
        machine = recorded if recorded.get("data_dir") == str(args.data_dir) and "niceness" in recorded else None
    load = (f"the campaign's run: {conditions_note(machine)}" if machine else
            "the load while the campaign ran was not recorded (bench/generative_campaign.json is of another run)")
    append(f"Recall latency per channel in that campaign (`{args.experiment}` on `{args.scenario}`)",
           ["day", "arm", "channel or stage", "p50 ms", "p99 ms"], rows,
           notes=f"wall clock per request from request_channel_latency / request_latency (each request charged "
                 f"its micro-batch of {how['serve_batch_size']}'s time); {recall_note(how['parallel_recall'])}; "
                 f"{load}")
    for row in rows:
        print(" | ".join(map(str, row)))


if __name__ == "__main__":
    main()
