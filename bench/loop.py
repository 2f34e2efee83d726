"""The closed loop, per arm and day: where the served slates sit between random and the oracle.

Runs a campaign as a user would (`python -m flows campaign`, in a subprocess: benches never import
flows) or, with --reuse, reads the one already in --data-dir, then takes from its lake, per arm and
day, the world's norm (E[CTR] placed between random slates, 0, and the oracle's, 1), E[CTR], the
distinct items shown and the personalised share of impressions. Writes bench/loop.json under
"<scenario>/<experiment>" and a section of bench/RESULTS.md.

One campaign is one draw of a chaotic process (a slate served differently sends users elsewhere),
so with --seeds each scenario seed runs its own campaign (in --data-dir/seed=<s>, --jobs at once)
and the figures are their mean, with the lowest and highest seed beside it.

    python -m bench.loop --scenario small --experiment default --days 7 [--data-dir DIR] [--reuse] [--label KEY]
                         [--seeds 7,8,9 --jobs 2]
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


def mean_days(per_seed: list[dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per day and arm present in every seed's campaign: each figure's mean over the seeds, and
    the norm's lowest and highest seed (`norm_min`, `norm_max`)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for day in per_seed[0]:
        for arm in per_seed[0][day]:
            cells = [s[day][arm] for s in per_seed if arm in s.get(day, {})]
            if len(cells) < len(per_seed):
                continue
            mean = {k: round(sum(c[k] for c in cells) / len(cells), 6 if k.startswith("ctr") else 4) for k in cells[0]}
            for k in ("requests", "items_shown"):
                mean[k] = round(mean[k])
            norms = [c["norm"] for c in cells]
            out.setdefault(day, {})[arm] = mean | {"norm_min": min(norms), "norm_max": max(norms)}
    return out


def run_campaigns(args, seeds: list[int | None]) -> list[Path] | None:
    """One campaign per seed (None: the scenario's own), `args.jobs` at a time; their data dirs,
    or None when one failed (its command named)."""
    dirs = [args.data_dir if s is None else args.data_dir / f"seed={s}" for s in seeds]
    if args.reuse:
        return dirs
    pending, running = list(zip(seeds, dirs)), []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed, data_dir = pending.pop(0)
            cmd = [sys.executable, "-m", "flows", "campaign", "--scenario", args.scenario, "--experiment",
                   args.experiment, "--days", str(args.days), "--data-dir", str(data_dir), "--fresh",
                   *(["--seed", str(seed)] if seed is not None else [])]
            running.append((cmd, data_dir, subprocess.Popen(cmd, stdout=None if len(seeds) == 1 else subprocess.DEVNULL)))
        cmd, data_dir, proc = running.pop(0)
        if proc.wait():
            for _, _, other in running:
                other.kill()
            print(f"error: the campaign failed: {' '.join(cmd)}", file=sys.stderr)
            return None
        if len(seeds) > 1:
            print(f"campaign done: {data_dir}", flush=True)
    return dirs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="small")
    p.add_argument("--experiment", default="default")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--data-dir", type=Path, default=HERE / "out" / "loop")
    p.add_argument("--reuse", action="store_true", help="read the campaign(s) already in --data-dir")
    p.add_argument("--seeds", help="scenario seeds, comma-separated: one campaign each, figures averaged "
                                   "(default: the scenario's own seed, one campaign)")
    p.add_argument("--jobs", type=int, default=1, help="campaigns run at once with --seeds")
    p.add_argument("--out", type=Path, default=HERE / "loop.json")
    p.add_argument("--label", help="the entry's key in the JSON (default: <scenario>/<experiment>)")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    from bench.results import append, conditions, conditions_note

    try:
        seeds: list[int | None] = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    except ValueError:
        p.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    if len(set(seeds)) < len(seeds) or args.jobs < 1:
        p.error("--seeds must not repeat a seed, and --jobs must be at least 1")
    load = os.getloadavg()
    t0 = time.perf_counter()
    dirs = run_campaigns(args, seeds)
    if dirs is None:
        return 1
    missing = [d for d in dirs if not (d / "campaign.json").is_file()]
    if missing:
        print(f"error: {missing[0]} holds no campaign; run without --reuse", file=sys.stderr)
        return 2
    manifests = [json.loads((d / "campaign.json").read_text()) for d in dirs]
    m = manifests[0]
    scenario, experiment = m["scenario"]["name"], m["experiment"]["name"]
    per_seed = [figures(d) for d in dirs]
    days = per_seed[0] if len(dirs) == 1 else mean_days(per_seed)
    key = args.label or f"{scenario}/{experiment}"
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    everything[key] = {"days": days, "scenario": m["scenario"], "experiment": m["experiment"],
                       "seconds": round(time.perf_counter() - t0, 1), "reused": args.reuse,
                       "conditions": conditions(load)}
    if len(dirs) > 1:
        everything[key]["seeds"] = {str(mf["scenario"]["seed"]): d for mf, d in zip(manifests, per_seed)}
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    arms = sorted({a for d in days.values() for a in d})
    best = max(((v["norm"], a, d) for d, per in days.items() for a, v in per.items() if d != "0"), default=None)
    print(f"wrote {args.out}; best norm {best[0]:.2f} ({best[1]}, day {best[2]})" if best else f"wrote {args.out}")
    if not args.no_results:
        def cell(v: dict) -> str:
            spread = f" [{v['norm_min']:.2f}, {v['norm_max']:.2f}]" if "norm_min" in v else ""
            return f"{v['norm']:.2f}{spread} ({v['items_shown']})"
        rows = [[d, *(cell(days[d][a]) if a in days[d] else "-" for a in arms)] for d in sorted(days, key=int)]
        b = m["scenario"]["behavior"]
        seed_note = (f"scenario seed {m['scenario']['seed']}" if len(dirs) == 1 else
                     f"mean of {len(dirs)} campaigns, scenario seeds "
                     f"{', '.join(str(mf['scenario']['seed']) for mf in manifests)}, then the lowest and "
                     f"highest seed's norm; the distinct items are the mean")
        append(f"Loop: {key}, norm per arm and day", ["day", *arms], rows,
               notes=(f"figures in bench/{args.out.name} under '{key}'; norm: E[CTR] of the served slates between random (0) and the oracle (1), from world_daily; "
                      f"in brackets the distinct items the arm showed that day (exposure_daily); {seed_note}, "
                      f"organic share {b.get('organic', 0)}, outside {b.get('outside')}; "
                      f"{'read from earlier runs' if args.reuse else 'run by this command'}; "
                      + conditions_note(everything[key]["conditions"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
