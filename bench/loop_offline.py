"""What the offline figures predict for a loop: each recall channel of a campaign's experiment,
trained on its lake up to the day before, scored on the next day's organic takes.

Organic takes are the items users found on their own (search, browsing): no arm's slates chose
them, so they rank the channels without the exposure each arm gave its own channel. The loop's
norms per arm (bench.loop) should come out in the order these recalls give. Each channel is fitted
from scratch with its config's `epochs` (a warm-starting channel's loop models carried yesterday's
weights instead).

    python -m bench.loop_offline --data-dir DIR [--days 3,5,7] [--ks 10,50] [--max-users 5000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def organic_targets(lake, day: int, max_users: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Users with organic takes on `day` (the lowest id hashes, at most `max_users`) and their items."""
    with lake.connect() as con:
        rows = con.sql(f"""SELECT user_id, list(DISTINCT item_id ORDER BY item_id) FROM organic WHERE day = {day}
                           GROUP BY user_id ORDER BY hash(user_id), user_id LIMIT {int(max_users)}""").fetchall()
    rows.sort(key=lambda r: r[0])
    return np.asarray([r[0] for r in rows], np.int64), [np.asarray(r[1], np.int64) for r in rows]


def channel_recalls(lake, day: int, exp, ks: list[int], max_users: int) -> dict[str, dict[str, float]]:
    """{channel: {"recall@K": .., "users": .., "fit_s": ..}} on `day`'s organic takes."""
    from components.features.store import FeatureStore
    from components.recall import CHANNELS
    from components.recall_eval import recall_of, unseen_top
    from components.training import train_data

    users, taken = organic_targets(lake, day, max_users)
    batch = FeatureStore.load(lake, day).user_batch(users)
    seen = [r[r >= 0] for r in batch.recent]
    targets = [t[~np.isin(t, s)] for t, s in zip(taken, seen)]
    # A user with no history gives every personalised channel nothing to start from: left out.
    keep = np.flatnonzero([len(t) > 0 and len(s) > 0 for t, s in zip(targets, seen)])
    data = train_data(lake, day - 1)
    out = {}
    for name in exp.channels_needed():
        if name == "explore":
            continue
        t0 = time.perf_counter()
        model = CHANNELS[name](getattr(exp.models, name)).fit(data)
        fit_s = time.perf_counter() - t0
        cands = model.recall(batch, max(ks) + batch.recent.shape[1])
        out[name] = {"users": int(len(keep)), "fit_s": round(fit_s, 1)}
        for k in ks:
            top = unseen_top(cands.items, seen, k)
            out[name][f"recall@{k}"] = round(float(np.mean(recall_of(top[keep], [targets[i] for i in keep]))), 4)
        print(f"  day {day} {name:10s} " + " ".join(f"R@{k} {out[name][f'recall@{k}']:.4f}" for k in ks)
              + f"  ({len(keep)} users, fit {fit_s:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, required=True, help="a campaign's folder (bench.loop's --data-dir)")
    p.add_argument("--days", default="3,5,7", help="days scored (channels fitted on the days before each)")
    p.add_argument("--ks", default="10,50")
    p.add_argument("--max-users", type=int, default=5000)
    p.add_argument("--out", type=Path, default=HERE / "loop_offline.json")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    from bench.results import append, conditions, conditions_note
    from common.typedconf import ConfigError, from_mapping
    from components.experiment import ExperimentConfig
    from components.lake import Lake

    manifest = args.data_dir / "campaign.json"
    if not manifest.is_file():
        print(f"error: {args.data_dir} holds no campaign (no campaign.json); give bench.loop's --data-dir",
              file=sys.stderr)
        return 2
    try:
        days = [int(d) for d in args.days.split(",") if d.strip()]
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        print(f"error: --days and --ks take comma-separated integers, got {args.days!r} and {args.ks!r}",
              file=sys.stderr)
        return 2
    m = json.loads(manifest.read_text())
    try:
        exp = from_mapping(ExperimentConfig, m["experiment"], "campaign.json experiment")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lake = Lake(args.data_dir / "lake")
    served = set(lake.days("organic"))
    missing = [d for d in days if d < 1 or d not in served]
    if missing:
        print(f"error: no organic takes on day(s) {missing} in {args.data_dir} (it has {sorted(served)}); "
              f"score days from 1 to the campaign's last", file=sys.stderr)
        return 2
    load, t0 = os.getloadavg(), time.perf_counter()
    result = {str(d): channel_recalls(lake, d, exp, ks, args.max_users) for d in days}
    key = f"{m['scenario']['name']}/{m['experiment']['name']}"
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    everything[key] = {"days": result, "ks": ks, "max_users": args.max_users,
                       "seconds": round(time.perf_counter() - t0, 1), "conditions": conditions(load)}
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.no_results:
        channels = sorted({c for per in result.values() for c in per})
        rows = [[d, *(" / ".join(f"{result[d][c][f'recall@{k}']:.4f}" for k in ks) if c in result[d] else "-"
                      for c in channels)] for d in result]
        users = {d: next(iter(result[d].values()))["users"] if result[d] else 0 for d in result}
        append(f"Loop offline: {key}, recall of the next day's organic takes per channel", ["day", *channels],
               rows, notes=(f"figures in bench/{args.out.name} under '{key}'; each cell R@{' / R@'.join(map(str, ks))}; "
                            f"channels fitted from scratch on the lake up to the day before (configs of the "
                            f"campaign's experiment, epochs not warm_epochs), scored on the organic takes of "
                            f"{', '.join(f'{n:,}' for n in users.values())} users with history (at most "
                            f"{args.max_users:,} a day), items they had already clicked left out; "
                            + conditions_note(everything[key]["conditions"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
