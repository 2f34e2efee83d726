"""The traditional recall channels on Amazon Beauty, full ranking, leave-one-out (bench/beauty.py).

Each channel is the production class from components/recall, fitted on every user's sequence up
to the validation item (`--fit-on before-target`, what the protocol allows when ranking the test
item; `train` drops the validation items too) as a click log, and asked for its top items given
the user's 20 most recent items (training part + validation item). The ranking is the channel's
recall list (`--depth` items deep); items outside it rank last. Items the user already
interacted with are removed. The neural channels train on CPU with `--threads` torch threads.

    python -m bench.beauty_traditional --data ../shared/data/amazon-beauty/Beauty.txt \
        --out bench/beauty_traditional.json [--topk-out PREFIX] [--channels sasrec,itemcf_window]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import beauty
from bench.results import append
from components.recall import (ItemCFConfig, ItemCFRecaller, PopularConfig, PopularRecaller, SASRecConfig,
                               SASRecRecaller, SwingConfig, SwingRecaller, TwoTowerConfig, TwoTowerRecaller)
from components.types import Catalog, ItemFeatures, TrainData, UserBatch

PUBLISHED = [  # ../shared/data/amazon-beauty/README.md: R@5, N@5, R@10, N@10
    ("SASRec (published, TIGER paper Table 1)", 0.0387, 0.0249, 0.0605, 0.0318),
    ("TIGER (published)", 0.0454, 0.0321, 0.0648, 0.0384),
    ("most popular, seen removed (README baseline)", 0.0077, 0.0042, 0.0135, 0.0061),
    ("co-occurrence window 3, last 3 items (README baseline)", 0.0605, 0.0446, 0.0803, 0.0510),
]


def channels(args: argparse.Namespace) -> dict[str, object]:
    """The channels benchmarked, with settings for a catalogue of 12k items and one long day."""
    # The whole history is one "day": windows in days keep everything.
    window = dict(window_days=1, neighbours=200, history=args.history, pair_window=3, distance_decay=1.0,
                  recency_decay=1.0, normalise=False)
    return {
        "popular": PopularRecaller(PopularConfig(window_days=1, decay=1.0)),
        # Every two items of a user pair up, normalised, seeds unweighted: the simulator's default.
        "itemcf_cooc": ItemCFRecaller(ItemCFConfig(window_days=1, neighbours=200, history=args.history,
                                                   alpha=0.5)),
        # The data README's baseline: pairs at most 3 positions apart, raw counts, recent seeds first.
        "itemcf_window": ItemCFRecaller(ItemCFConfig(**window)),
        "itemcf_window_fwd2": ItemCFRecaller(ItemCFConfig(**window, forward_weight=2.0)),
        "itemcf_swing": SwingRecaller(SwingConfig(window_days=1, neighbours=200, history=args.history,
                                                  alpha=1.0, user_weight=True)),
        "itemcf_swing_recent": SwingRecaller(SwingConfig(window_days=1, neighbours=200, history=args.history,
                                                         alpha=1.0, user_weight=True, recency_decay=1.0)),
        "two_tower": TwoTowerRecaller(TwoTowerConfig(dim=64, hidden=128, history=20, window_days=1,
                                                     epochs=args.two_tower_epochs, batch_size=1024,
                                                     lr=2e-3, temperature=0.05, device=args.device,
                                                     budget_s=60 * args.budget_minutes)),
        "sasrec": SASRecRecaller(SASRecConfig(dim=args.sasrec_dim, heads=2, layers=2, max_len=beauty.MAX_INPUT,
                                              dropout=args.sasrec_dropout, window_days=1, epochs=args.sasrec_epochs,
                                              batch_size=args.sasrec_batch, lr=args.sasrec_lr, device=args.device,
                                              budget_s=60 * args.budget_minutes)),
    }


def budget(name: str, model: object, args: argparse.Namespace) -> str:
    """What a channel's training was allowed and what it did, as written into the JSON and the table."""
    where = (f"{args.device}" + (f", {args.threads} torch threads" if args.device == "cpu" else "")
             + f"; cap {args.budget_minutes:g} min")
    if name not in ("sasrec", "two_tower"):
        return "counting, no training loop"
    losses = getattr(model, "losses_", [])
    done = (f"ran {len(losses)} epochs ({model.steps_} steps), last epoch loss {losses[-1]:.3f}"
            if losses else "no epoch ran")
    if name == "sasrec":
        return (f"{args.sasrec_epochs} epochs asked, dim {args.sasrec_dim}, batch {args.sasrec_batch}, "
                f"lr {args.sasrec_lr}, dropout {args.sasrec_dropout}, full-softmax CE; {where}; {done}")
    return f"{args.two_tower_epochs} epochs asked, in-batch sampled softmax (batch 1024, logQ); {where}; {done}"


def train_data(split: beauty.Split, upto: str) -> TrainData:
    users, items, order = split.train_clicks(upto)
    n = split.n_items
    catalog = Catalog(item_id=np.arange(n, dtype=np.int64), category=np.zeros(n, np.int32),
                      content=np.zeros((n, 1), np.float32))   # the file has no item content
    return TrainData(day=0, catalog=catalog, click_user=users, click_item=items,
                     click_day=np.zeros(len(items), np.int32), click_ts=order)


def user_batch(split: beauty.Split, data: TrainData, rows: np.ndarray, stage: str) -> UserBatch:
    zeros = np.zeros(len(rows), np.int64)
    items = ItemFeatures(data.catalog, np.zeros(split.n_items, np.int64), np.zeros(split.n_items, np.int64))
    return UserBatch(user_ids=rows.astype(np.int64), impressions=zeros, clicks=zeros,
                     recent=split.inputs(stage)[rows], items=items)


def score_fn(model, split: beauty.Split, data: TrainData, depth: int, stage: str, ties: str):
    def score(rows: np.ndarray) -> np.ndarray:
        cands = model.recall(user_batch(split, data, rows, stage), depth)
        out = np.full((len(rows), split.n_items), -np.inf)                          # [B, I]
        r, c = np.nonzero(cands.items >= 0)
        if ties == "pessimistic":
            # The channel's own scores: items tied with the target rank ahead of it (bench/beauty.py).
            out[r, cands.items[r, c]] = cands.scores[r, c]
        else:
            # The served order is the ranking (ties broken as top_k's partition left them).
            out[r, cands.items[r, c]] = depth - c
        return out
    return score


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--topk-out", type=Path, help="prefix: writes PREFIX.<channel>.txt, one line a user")
    p.add_argument("--channels", default="popular,itemcf_cooc,itemcf_window,itemcf_window_fwd2,itemcf_swing,"
                                          "itemcf_swing_recent,two_tower,sasrec")
    p.add_argument("--depth", type=int, default=300, help="recall list length per user")
    p.add_argument("--history", type=int, default=3, help="recent items item-CF starts from")
    p.add_argument("--sasrec-epochs", type=int, default=30)
    p.add_argument("--sasrec-dim", type=int, default=64)
    p.add_argument("--sasrec-batch", type=int, default=256)
    p.add_argument("--sasrec-lr", type=float, default=2e-3)
    p.add_argument("--sasrec-dropout", type=float, default=0.3)
    p.add_argument("--two-tower-epochs", type=int, default=10)
    p.add_argument("--device", default="cpu", help="torch device for training two_tower and sasrec")
    p.add_argument("--budget-minutes", type=float, default=15.0,
                   help="training time cap of each neural channel (checked every batch)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    p.add_argument("--stage", choices=("test", "valid"), default="test")
    p.add_argument("--ties", choices=("pessimistic", "list-order"), default="pessimistic",
                   help="pessimistic: rank by the channel's scores, ties against the target; "
                        "list-order: by the position in the served recall list")
    p.add_argument("--fit-on", choices=("before-target", "train"), default="before-target",
                   help="before-target: every sequence up to the item before the stage's target")
    p.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    split = beauty.load(args.data)
    data = train_data(split, "test" if args.fit_on == "before-target" and args.stage == "test" else "train")
    available = channels(args)
    wanted = [c.strip() for c in args.channels.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        p.error(f"--channels: unknown {unknown}; choose from {sorted(available)}")
    results, seconds, load = {}, {}, [os.getloadavg()[0]]
    for name in wanted:
        t0 = time.perf_counter()
        model = available[name].fit(data)
        t1 = time.perf_counter()
        metrics, top = beauty.evaluate(split, score_fn(model, split, data, args.depth, args.stage, args.ties), args.stage)
        seconds[name] = (t1 - t0, time.perf_counter() - t1)
        load.append(os.getloadavg()[0])
        # The four figures first (the JSON shape other tools read), then how they were obtained.
        results[name] = {**metrics, "fit_seconds": round(t1 - t0, 1), "train_budget": budget(name, model, args)}
        print(f"{name:14s} fit {t1 - t0:7.1f}s  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
              flush=True)
        if args.topk_out:
            beauty.write_topk(Path(f"{args.topk_out}.{name}.txt"), split, top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.no_results:
        return
    rows = [[name, *(f"{m[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")),
             f"{seconds[name][0]:.0f}", m["train_budget"]] for name, m in results.items()]
    rows += [[name, *(f"{v:.4f}" for v in vals), "-", "published / data README"] for name, *vals in PUBLISHED]
    append(f"Amazon Beauty, traditional recall channels ({args.stage}, full ranking, leave-one-out)",
           ["channel", "R@5", "N@5", "R@10", "N@10", "fit s", "training budget"], rows,
           notes=(f"{len(split.test):,} users (all), {split.n_items:,} items; fitted on {args.fit_on}; "
                  f"ties {args.ties}; item-CF from the last {args.history} items; recall depth {args.depth}; seen items removed; "
                  f"one run, niceness {os.nice(0)}; 1-minute load average {min(load):.1f} to {max(load):.1f} on "
                  f"{os.cpu_count()} cores during the run (os.getloadavg, shared machine)"))


if __name__ == "__main__":
    main()
