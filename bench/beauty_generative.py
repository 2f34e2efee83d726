"""Generative recall on Amazon Beauty, by the shared leave-one-out protocol (bench/beauty.py).

The file has no item text, so semantic ids are quantised from collaborative item embeddings
(co-occurrence PPMI + SVD over the training part of every sequence); the transformer trains on
the same training parts, keeps the epoch whose recall@10 of the validation item (second to last)
is best on a sample of users, and the test input is each user's history before the target.
`--stage valid` ranks the validation item instead, to compare settings without touching the test.

    python -m bench.beauty_generative --data ../shared/data/amazon-beauty/Beauty.txt \
        --out bench/beauty_generative.json --topk-out FILE

The defaults are the reported setting (RQ-KMeans ids from collaborative embeddings, the item-level
model, d_model 128, 2 layers, dropout 0.5, lr 2e-3, 40 epochs, beam 50, 2 threads).
`--embedding sequential` quantises a 30-epoch SASRec's item vectors instead (13 more CPU minutes).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

# OpenMP threads sleep instead of spinning while they wait: on a machine shared with other jobs,
# spinning threads that lose their core made a training step of 2 threads 3 times slower than 1.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

from bench import beauty
from bench.results import append
from components.recall.generative import GenerativeConfig, GenerativeRecaller
from components.recall.generative.model import GPTConfig
from components.recall.generative.quantize import QuantizerConfig
from components.recall.generative.train import TrainConfig
from components.types import Catalog

PUBLISHED = {"TIGER (published)": (0.0454, 0.0321, 0.0648, 0.0384),
             "item co-occurrence (data README)": (0.0605, 0.0446, 0.0803, 0.0510)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--topk-out", type=Path)
    p.add_argument("--ids", choices=["rqvae", "rqkmeans"], default="rqkmeans")
    p.add_argument("--embedding", choices=["collaborative", "sequential"], default="collaborative",
                   help="collaborative: co-occurrence PPMI + SVD; sequential: a full-softmax SASRec's item vectors")
    p.add_argument("--sequential-epochs", type=int, default=30, help="sequential embedding: SASRec epochs")
    p.add_argument("--collab-dim", type=int, default=64, help="collaborative item embedding: SVD dimensions")
    p.add_argument("--collab-window", type=int, default=3, help="collaborative item embedding: co-occurrence window")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--budget-minutes", type=float, default=30.0, help="cap on the transformer's training time")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--arch", choices=["tokens", "items"], default="items",
                   help="tokens: the history read as L code tokens per item; items: one token per item")
    p.add_argument("--item-embedding", action="store_true", help="items arch: a learned vector per item on input")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--codebook", type=int, default=256, help="codes per quantised level")
    p.add_argument("--levels", type=int, default=3, help="quantised levels (a unique level is added)")
    p.add_argument("--valid-users", type=int, default=5000,
                   help="users whose validation item (second-to-last) picks the epoch; 0: train all epochs")
    p.add_argument("--select-by", choices=["recall", "nll"], default="recall",
                   help="what picks the epoch on the validation item: recall@10 of a beam search, or log-likelihood")
    p.add_argument("--patience", type=int, default=0, help="stop after this many epochs without a better validation")
    p.add_argument("--no-bucket", action="store_true", help="batch rows in random order, not by length")
    p.add_argument("--seed", type=int, default=0, help="seeds the ids' k-means and the model's initialisation and batches")
    p.add_argument("--device", default="cpu")
    p.add_argument("--stage", choices=["test", "valid"], default="test",
                   help="rank the test item (the report) or the validation item (to compare settings)")
    p.add_argument("--beam", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-users", type=int, default=0,
                   help="evaluate a uniform random sample of this many users (0: all, as the protocol asks)")
    p.add_argument("--fit-on", choices=["train", "before-target"], default="train",
                   help="train: the training parts only; before-target: every sequence up to its test item "
                        "(the data README's co-occurrence baseline does so), the epoch count then fixed")
    p.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    return p


def fit_and_evaluate(split: beauty.Split, args: argparse.Namespace):
    """Fit the generative channel on `split` as `args` say and rank every user's target.

    Returns (metrics, top [U, 10], model, fit seconds, decode seconds, the evaluated split)."""
    n = split.n_items
    catalog = Catalog(np.arange(n), np.zeros(n, np.int32), np.zeros((n, 1), np.float32))
    cfg = GenerativeConfig(
        embedding=args.embedding, collab_dim=args.collab_dim, collab_window=args.collab_window,
        sequential_epochs=args.sequential_epochs,
        ids=QuantizerConfig(method=args.ids, levels=args.levels, codebook_size=args.codebook, epochs=300),
        model=GPTConfig(max_items=beauty.MAX_INPUT, n_layer=args.layers, n_head=args.heads, d_model=args.d_model,
                        dropout=args.dropout, arch=args.arch,
                        item_embedding=args.item_embedding),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          max_seconds=args.budget_minutes * 60, patience=args.patience,
                          bucket_by_length=not args.no_bucket, select_by=args.select_by),
        beam_width=args.beam, serve_batch=256, device=args.device, seed=args.seed)
    valid = None
    if args.valid_users:
        # Validation: the second-to-last item after the training part, never the test item.
        vu = np.random.default_rng(1).choice(len(split.user_ids), min(args.valid_users, len(split.user_ids)),
                                             replace=False)
        valid = ([split.train[u] for u in vu], split.valid[vu])
    t0 = time.perf_counter()
    sequences = (split.train if args.fit_on == "train" else
                 [np.append(t, v) for t, v in zip(split.train, split.valid)])   # never a test item
    model = GenerativeRecaller(cfg).fit_sequences(sequences, catalog, valid)
    fit_s = time.perf_counter() - t0
    if args.eval_users:
        pick = np.sort(np.random.default_rng(0).choice(len(split.user_ids), args.eval_users, replace=False))
        split = beauty.Split(split.user_ids[pick], [split.train[i] for i in pick], split.valid[pick],
                             split.test[pick], split.n_items)
    recent = split.inputs(args.stage)                                                    # [U, 20] newest first
    t1 = time.perf_counter()
    cands = model.generate(recent, args.beam)                                        # [U, beam]
    decode_s = time.perf_counter() - t1

    def score(rows: np.ndarray) -> np.ndarray:
        # Items outside the beam tie far below it: the target there gets no credit (ties count against it).
        s = np.full((len(rows), n), -1e9)
        items, logp = cands.items[rows], cands.scores[rows]
        r, c = np.nonzero(items >= 0)
        s[r, items[r, c]] = logp[r, c]
        return s

    metrics, top = beauty.evaluate(split, score, args.stage)
    return metrics, top, model, fit_s, decode_s, split, cfg


def main() -> None:
    p = parser()
    args = p.parse_args()
    if args.fit_on == "before-target" and (args.valid_users or args.stage == "valid"):
        p.error("--fit-on before-target trains on the validation items: use --valid-users 0 and --stage test")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_start = os.getloadavg()

    full = beauty.load(args.data)
    metrics, top, model, fit_s, decode_s, split, cfg = fit_and_evaluate(full, args)
    name = f"generative_{args.ids}_{args.embedding}"
    report = {name: {**metrics, "stage": args.stage, "fit_on": args.fit_on, "users_evaluated": len(split.user_ids), "users": len(full.user_ids),
                     "fit_seconds": fit_s, "decode_seconds": decode_s, "threads": args.threads,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
                     "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
                     "valid_users": args.valid_users, "beam": args.beam,
                     **{k: float(v) for k, v in model.metrics_.items()}, "config": asdict(cfg)}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.topk_out:
        beauty.write_topk(args.topk_out, split, top)
    print(json.dumps({name: metrics}, indent=2))
    print(f"fit {fit_s:.0f} s (ids {model.metrics_['ids_seconds']:.0f} s, model {model.metrics_['model_seconds']:.0f} s),"
          f" decode {decode_s:.0f} s for {len(split.user_ids)} users")
    if not args.no_results and args.stage == "test":   # validation figures only compare settings
        rows = [[k, *v, "published / data README"] for k, v in PUBLISHED.items()]
        rows.append([name, *(f"{metrics[m]:.4f}" for m in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")),
                     f"fit {fit_s / 60:.1f} min (model {model.metrics_['model_seconds'] / 60:.1f} min,"
                     f" {model.metrics_['epochs_run']:.0f} epochs), torch threads {args.threads},"
                     f" {model.metrics_['parameters']:.0f} params, beam {args.beam}"])
        append("Generative recall on Amazon Beauty (leave-one-out, full ranking)",
               ["method", "R@5", "N@5", "R@10", "N@10", "budget"], rows,
               notes=f"one run (seed {args.seed}); fitted on {args.fit_on}; {len(split.user_ids):,} of {len(full.user_ids):,} users evaluated; collision rate "
                     f"before the unique level {model.metrics_['ids.collision_rate']:.3f}, level utilisation "
                     + "/".join(f"{v:.2f}" for k, v in model.metrics_.items() if k.startswith("ids.utilisation"))
                     + (f"; epoch kept {model.metrics_.get('best_epoch', 0):.0f} (validation {'recall@10' if args.select_by == 'recall' else 'NLL'} on "
                        f"{args.valid_users} users' second-to-last item)" if args.valid_users else
                        f"; no validation split, all {model.metrics_['epochs_run']:.0f} epochs kept")
                     + f"; niceness {os.nice(0)}; "
                     "load average (1/5/15 min) at start " + "/".join(f"{x:.1f}" for x in load_start)
                     + ", at end " + "/".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
