"""Id admission and eviction against what they cost: embedding rows, bytes and next-day AUC/GAUC.

A campaign of the default experiment (cheap to serve) is run through the story for `--days` days
on `--scenario`, building each day's samples. DeepFM (the deep-stack preset's settings) is then
trained on the samples of the window ending the day before the last (`sample_window_days` days, as
daily training reads them) under each admission threshold (`min_count`: impressions an item needs
in the window for its own row) and eviction setting (`evict_days`: an item last shown more than N
days before the training day loses its row; 0 never), and scored on the last day's samples: the
next day, which no model saw. Reports the rows and bytes of the id-indexed parameters (item
embedding and item bias), AUC and GAUC, and the smallest threshold that halves the table against
the baseline (every item shown in the window its own row: min_count 1, no eviction) with its AUC
cost. Writes key "admission" (the sweep's rows) and "admission_summary" into bench/online.json
(read, merged, written: other scripts own the other keys) and a section of bench/RESULTS.md.

    python -m bench.online_admission [--scenario small] [--days 4] [--epochs 1] [--data-dir DIR] [--reuse]
        [--thresholds 1,30,50,70,100,300,1000]

The `small` world by default: on `beauty` (fitted CTR about 0.3 %) both rankers are degenerate on
the next day's samples (the MLP predicts 0 everywhere, DeepFM's AUC is below 0.5), so AUC costs
there measure nothing; `large` does not train a day in minutes on a 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "online.json"
THRESHOLDS = (1, 30, 50, 70, 100, 300, 1000)
EVICT_DAYS = (0, 1)
EVICT_THRESHOLDS = (1, 50, 100)    # eviction swept at fewer thresholds: each fit is the sweep's cost


def run_campaign(data_dir: Path, scenario: str, days: int):
    """`days` days of the default experiment, each with its samples; models trained for all but the last."""
    from bench.days import serve_day, train_day
    from components.experiment import load_experiment
    from sim.config import load_scenario
    from story.campaign import create_campaign

    c = create_campaign(data_dir, "bench-admission", load_scenario(scenario), load_experiment("default"), None)
    for day in range(days):
        t = time.perf_counter()
        rows = serve_day(c, day)
        if day < days - 1:
            train_day(c, day)
        print(f"day {day}: {rows} samples, {time.perf_counter() - t:.0f} s", flush=True)
    return c


def read_samples(lake, days: list[int], day: int):
    from components.features.store import load_catalog
    from components.ranking import Samples

    catalog = load_catalog(lake, day)
    return Samples.concat([Samples.from_table(t, catalog) for t in lake.read_batches("samples", days)], catalog)


def parse_thresholds(text: str) -> tuple[int, ...]:
    """`--thresholds 1,70,80`: positive integers including 1 (the baseline), sorted; ValueError names the bad one."""
    try:
        out = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise ValueError(f"--thresholds {text!r}: expected comma-separated integers, e.g. 1,70,80,100") from None
    if not out or out[0] < 1 or 1 not in out:
        raise ValueError(f"--thresholds {text!r}: need positive integers including 1 (the baseline, every item its own row)")
    return out


def sweep(lake, days: int, epochs: int, thresholds: tuple[int, ...] = THRESHOLDS) -> list[dict]:
    from components.experiment import load_experiment
    from components.ranking import DeepFMRanker
    from components.ranking.metrics import auc, gauc

    train_day, test_day = days - 2, days - 1
    window = load_experiment("full").models.sample_window_days
    base = replace(load_experiment("full").models.deepfm, epochs=epochs)
    train = read_samples(lake, [d for d in range(train_day - window + 1, train_day + 1) if d >= 0], train_day)
    test = read_samples(lake, [test_day], test_day)
    print(f"train {len(train.label)} rows (days <= {train_day}), test {len(test.label)} rows (day {test_day})")
    rows = []
    # The baseline again under another seed: how far AUC moves by training noise alone.
    runs = [(t, e, 0) for e in EVICT_DAYS for t in (thresholds if e == 0 else EVICT_THRESHOLDS)] + \
        [(1, 0, 1)]
    for threshold, evict, seed in runs:
        t = time.perf_counter()
        model = DeepFMRanker(replace(base, min_count=threshold, evict_days=evict, seed=seed)).fit(train)
        fit_s = time.perf_counter() - t
        prob = model.predict_samples(test)
        row = {"threshold": threshold, "evict_days": evict, "seed": seed, "rows": model.ids_.size,
               "admitted": model.ids_.n_admitted, "bytes": model.id_table_bytes(),
               "auc": round(auc(test.label, prob), 4), "gauc": round(gauc(test.user_id, test.label, prob), 4),
               "fit_s": round(fit_s, 1)}
        print(row, flush=True)
        rows.append(row)
    return rows


def halving(rows: list[dict]) -> dict:
    """The smallest threshold (per eviction setting) whose table is at most half the baseline's, and
    the largest below it that keeps more (`below_<key>`): the halving threshold lies between them."""
    base = next(r for r in rows if r["threshold"] == 1 and r["evict_days"] == 0 and r["seed"] == 0)
    other = next(r for r in rows if r["seed"] == 1)
    out = {"baseline": base, "seed_noise_auc": round(abs(other["auc"] - base["auc"]), 4),
           "seed_noise_gauc": round(abs(other["gauc"] - base["gauc"]), 4)}
    for evict in EVICT_DAYS:
        half = [r for r in rows if r["evict_days"] == evict and r["seed"] == 0 and r["rows"] <= base["rows"] / 2]
        if half:
            r = min(half, key=lambda r: r["threshold"])
            out[f"evict_{evict}"] = {**r, "auc_cost": round(base["auc"] - r["auc"], 4),
                                     "gauc_cost": round(base["gauc"] - r["gauc"], 4),
                                     "row_share": round(r["rows"] / base["rows"], 3)}
            more = [q for q in rows if q["evict_days"] == evict and q["seed"] == 0 and q["threshold"] < r["threshold"]]
            if more:
                q = max(more, key=lambda q: q["threshold"])
                out[f"below_evict_{evict}"] = {**q, "auc_cost": round(base["auc"] - q["auc"], 4),
                                               "row_share": round(q["rows"] / base["rows"], 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="small")
    p.add_argument("--epochs", type=int, default=1, help="DeepFM's epochs per fit (the preset trains 3)")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--reuse", action="store_true", help="sweep the campaign already in --data-dir")
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)),
                   help="min_count values swept without eviction, comma-separated, 1 (the baseline) included")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    if args.days < 2:
        p.error("--days must be at least 2 (a training window and the next day to score)")
    try:
        thresholds = parse_thresholds(args.thresholds)
    except ValueError as exc:
        p.error(str(exc))
    from bench.results import append, conditions, conditions_note, write_json_key
    from components.lake import Lake

    load = os.getloadavg()
    t0 = time.perf_counter()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="reclab-admission-"))
    if args.reuse:
        lake = Lake(data_dir / "lake")
        if len(lake.days("samples")) < args.days:
            p.error(f"{data_dir} holds samples of days {lake.days('samples')}, fewer than --days {args.days}")
    else:
        lake = run_campaign(data_dir, args.scenario, args.days).lake
    campaign_s = time.perf_counter() - t0
    rows = sweep(lake, args.days, args.epochs, thresholds)
    summary = {"scenario": args.scenario, "days": args.days, "ranker": "deepfm", "epochs": args.epochs,
               "train_day": args.days - 2,
               "test_day": args.days - 1, "campaign_s": round(campaign_s, 1),
               "seconds": round(time.perf_counter() - t0, 1), **halving(rows), "conditions": conditions(load)}
    write_json_key(OUT, "admission", rows)
    write_json_key(OUT, "admission_summary", summary)
    print(json.dumps(summary, indent=2))
    if not args.no_results:
        cut = [summary[k] for k in ("evict_0", "evict_1") if k in summary]
        words = "; ".join(f"with evict_days {r['evict_days']}, min_count {r['threshold']} keeps {r['rows']} rows "
                          f"({r['row_share']:.0%} of the baseline's) at an AUC cost of {r['auc_cost']:+.4f} "
                          f"(GAUC {r['gauc_cost']:+.4f})"
                          + (f", min_count {b['threshold']} still keeps {b['row_share']:.0%}"
                             if (b := summary.get(f"below_evict_{r['evict_days']}")) else "")
                          for r in cut) or "no threshold swept halves the table"
        append(f"Id admission and eviction, DeepFM on the `{args.scenario}` world: table size against next-day AUC",
               ["min_count", "evict_days", "seed", "rows", "admitted", "bytes", "AUC", "GAUC", "fit s"],
               [[r["threshold"], r["evict_days"], r["seed"], r["rows"], r["admitted"], f"{r['bytes']:,}", f"{r['auc']:.4f}",
                 f"{r['gauc']:.4f}", f"{r['fit_s']:.1f}"] for r in rows],
               notes=f"figures in bench/online.json (keys admission, admission_summary); a {args.days}-day "
                     f"campaign of the default experiment, DeepFM (deep-stack settings, {args.epochs} epoch(s)) trained on the samples of "
                     f"days <= {args.days - 2} (3-day window), scored on day {args.days - 1}'s; rows and bytes of "
                     f"the id-indexed parameters (item embedding, item bias). Baseline min_count 1, no eviction: "
                     f"{summary['baseline']['rows']} rows, AUC {summary['baseline']['auc']:.4f}; the same under seed 1 "
                     f"moves AUC by {summary['seed_noise_auc']:.4f} (training noise). Halving: {words}. "
                     + conditions_note(summary["conditions"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
