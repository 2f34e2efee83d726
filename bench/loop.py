"""The closed loop, per arm and day: where the served slates sit between random and the oracle.

Runs a campaign as a user would (`python -m flows campaign`, in a subprocess: benches never import
flows) or, with --reuse, reads the one already in --data-dir, then takes from its lake, per arm and
day, the world's norm (E[CTR] placed between random slates, 0, and the oracle's, 1), E[CTR], the
distinct items shown and the personalised share of impressions. Writes bench/loop.json under
"<scenario>/<experiment>" and a section of bench/RESULTS.md.

    python -m bench.loop --scenario small --experiment default --days 7 [--data-dir DIR] [--reuse] [--label KEY]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def figures(data_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{day: {arm: {norm, ctr_expected, ctr_oracle, ctr_random, items_shown, personalised_share}}}."""
    from components.lake import Lake

    lake = Lake(data_dir / "lake")
    with lake.connect() as con:
        rows = con.sql("""SELECT w.day, w.arm, w.requests, w.ctr_expected, w.ctr_oracle, w.ctr_random,
                                 e.items_shown, e.personalised_share
                          FROM world_daily w LEFT JOIN exposure_daily e USING (day, arm)
                          ORDER BY w.day, w.arm""").fetchall()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for day, arm, requests, e, oracle, random, shown, personalised in rows:
        span = oracle - random
        out.setdefault(str(day), {})[arm] = {
            "requests": int(requests), "norm": round((e - random) / span, 4) if span > 0 else float("nan"),
            "ctr_expected": round(e, 6), "ctr_oracle": round(oracle, 6), "ctr_random": round(random, 6),
            "items_shown": int(shown or 0), "personalised_share": round(float(personalised or 0.0), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="small")
    p.add_argument("--experiment", default="default")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--data-dir", type=Path, default=HERE / "out" / "loop")
    p.add_argument("--reuse", action="store_true", help="read the campaign already in --data-dir")
    p.add_argument("--out", type=Path, default=HERE / "loop.json")
    p.add_argument("--label", help="the entry's key in the JSON (default: <scenario>/<experiment>)")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    from bench.results import append, conditions, conditions_note

    load = os.getloadavg()
    t0 = time.perf_counter()
    if not args.reuse:
        cmd = [sys.executable, "-m", "flows", "campaign", "--scenario", args.scenario, "--experiment",
               args.experiment, "--days", str(args.days), "--data-dir", str(args.data_dir), "--fresh"]
        if subprocess.run(cmd).returncode:
            print(f"error: the campaign failed: {' '.join(cmd)}", file=sys.stderr)
            return 1
    manifest = args.data_dir / "campaign.json"
    if not manifest.is_file():
        print(f"error: {args.data_dir} holds no campaign; run without --reuse", file=sys.stderr)
        return 2
    m = json.loads(manifest.read_text())
    scenario, experiment = m["scenario"]["name"], m["experiment"]["name"]
    days = figures(args.data_dir)
    key = args.label or f"{scenario}/{experiment}"
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    everything[key] = {"days": days, "scenario": m["scenario"], "experiment": m["experiment"],
                       "seconds": round(time.perf_counter() - t0, 1), "reused": args.reuse,
                       "conditions": conditions(load)}
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    arms = sorted({a for d in days.values() for a in d})
    best = max(((v["norm"], a, d) for d, per in days.items() for a, v in per.items() if d != "0"), default=None)
    print(f"wrote {args.out}; best norm {best[0]:.2f} ({best[1]}, day {best[2]})" if best else f"wrote {args.out}")
    if not args.no_results:
        rows = [[d, *(f"{days[d][a]['norm']:.2f} ({days[d][a]['items_shown']})" if a in days[d] else "-"
                      for a in arms)] for d in sorted(days, key=int)]
        b = m["scenario"]["behavior"]
        append(f"Loop: {key}, norm per arm and day", ["day", *arms], rows,
               notes=(f"figures in bench/{args.out.name} under '{key}'; norm: E[CTR] of the served slates between random (0) and the oracle (1), from world_daily; "
                      f"in brackets the distinct items the arm showed that day (exposure_daily); scenario seed "
                      f"{m['scenario']['seed']}, organic share {b.get('organic', 0)}, outside {b.get('outside')}; "
                      f"{'read from an earlier run' if args.reuse else 'campaign run by this command'}; "
                      + conditions_note(everything[key]["conditions"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
