"""The traditional recall channels on Amazon Beauty, full ranking, leave-one-out (bench/beauty.py).

Each channel is the production class from components/recall, fitted on the training part of
every user's sequence (all but the last two items) as a click log, and asked for its top items
given the user's 20 most recent items (training part + validation item). The ranking is the
channel's recall list (`--depth` items deep); items outside it rank last. Items the user already
interacted with are removed.

    python -m bench.beauty_traditional --data ../shared/data/amazon-beauty/Beauty.txt \
        --out bench/beauty_traditional.json [--topk-out FILE] [--channels sasrec,swing]
"""
from __future__ import annotations

import argparse
import json
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
    return {
        "popular": PopularRecaller(PopularConfig(window_days=1, decay=1.0)),
        "itemcf_cooc": ItemCFRecaller(ItemCFConfig(window_days=1, neighbours=200, history=args.history,
                                                   alpha=0.5)),
        "itemcf_swing": SwingRecaller(SwingConfig(window_days=1, neighbours=200, history=args.history,
                                                  alpha=1.0, user_weight=True)),
        "two_tower": TwoTowerRecaller(TwoTowerConfig(dim=64, hidden=128, history=20, window_days=1,
                                                     epochs=args.two_tower_epochs, batch_size=1024,
                                                     lr=2e-3, temperature=0.05, device=args.device)),
        "sasrec": SASRecRecaller(SASRecConfig(dim=args.sasrec_dim, heads=2, layers=2, max_len=beauty.MAX_INPUT,
                                              dropout=0.3, window_days=1, epochs=args.sasrec_epochs,
                                              batch_size=256, lr=2e-3, device=args.device)),
    }


def train_data(split: beauty.Split) -> TrainData:
    users, items, order = split.train_clicks()
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


def score_fn(model, split: beauty.Split, data: TrainData, depth: int, stage: str):
    def score(rows: np.ndarray) -> np.ndarray:
        cands = model.recall(user_batch(split, data, rows, stage), depth)
        out = np.full((len(rows), split.n_items), -np.inf)                          # [B, I]
        r, c = np.nonzero(cands.items >= 0)
        # Recall order is the ranking: depth - position keeps it even where scores tie.
        out[r, cands.items[r, c]] = depth - c
        return out
    return score


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--topk-out", type=Path, help="prefix: writes PREFIX.<channel>.txt, one line a user")
    p.add_argument("--channels", default="popular,itemcf_cooc,itemcf_swing,two_tower,sasrec")
    p.add_argument("--depth", type=int, default=300, help="recall list length per user")
    p.add_argument("--history", type=int, default=3, help="recent items item-CF starts from")
    p.add_argument("--sasrec-epochs", type=int, default=30)
    p.add_argument("--sasrec-dim", type=int, default=64)
    p.add_argument("--two-tower-epochs", type=int, default=10)
    p.add_argument("--device", default="cpu", help="torch device for training two_tower and sasrec")
    p.add_argument("--stage", choices=("test", "valid"), default="test")
    p.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args(argv)

    split = beauty.load(args.data)
    data = train_data(split)
    available = channels(args)
    wanted = [c.strip() for c in args.channels.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        p.error(f"--channels: unknown {unknown}; choose from {sorted(available)}")
    results, seconds = {}, {}
    for name in wanted:
        t0 = time.perf_counter()
        model = available[name].fit(data)
        t1 = time.perf_counter()
        metrics, top = beauty.evaluate(split, score_fn(model, split, data, args.depth, args.stage), args.stage)
        seconds[name] = (t1 - t0, time.perf_counter() - t1)
        results[name] = metrics
        print(f"{name:14s} fit {t1 - t0:7.1f}s  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
              flush=True)
        if args.topk_out:
            beauty.write_topk(Path(f"{args.topk_out}.{name}.txt"), split, top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.no_results:
        return
    rows = [[name, *(f"{m[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")),
             f"{seconds[name][0]:.0f}"] for name, m in results.items()]
    rows += [[name, *(f"{v:.4f}" for v in vals), "-"] for name, *vals in PUBLISHED]
    append(f"Amazon Beauty, traditional recall channels ({args.stage}, full ranking, leave-one-out)",
           ["channel", "R@5", "N@5", "R@10", "N@10", "fit s"], rows,
           notes=(f"{len(split.test):,} users, {split.n_items:,} items; torch threads {torch.get_num_threads()}; "
                  + (f"sasrec {args.sasrec_epochs} epochs dim {args.sasrec_dim}; " if "sasrec" in results else "")
                  + (f"two-tower {args.two_tower_epochs} epochs; " if "two_tower" in results else "")
                  + f"trained on {args.device}; item-CF from the last {args.history} items; seen items removed; one run"))


if __name__ == "__main__":
    main()
