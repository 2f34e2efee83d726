"""Generative recall speed in the simulator: training time per day, recall latency and throughput.

Builds the two-day `small` lake of bench/serving.py, trains the generative channel of the
`generative` experiment on day 1 (`--fits` times), then serves day 2: single requests
(p50/p99 over `--requests`) and batches of 256 (requests/s, median of `--repeats`), at the
configured beam width.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.results import append
from bench.serving import build
from components import training
from components.features.store import FeatureStore
from components.recall.generative import GenerativeRecaller
from components.experiment import load_experiment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="small")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3, help="timed batches of 256")
    p.add_argument("--fits", type=int, default=1,
                   help="trainings to time (each runs to the config's max_seconds budget or its epochs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arch", choices=["tokens", "items"], help="override the config's model.arch")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(load_experiment("generative").models.generative, beam_width=args.beam)
    if args.arch:
        cfg = replace(cfg, model=replace(cfg.model, arch=args.arch))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        c = build(Path(tmp), args.scenario)
        data = training.train_data(c.lake, 1)
        fits, model = [], None
        for _ in range(args.fits):
            t = time.perf_counter()
            model = GenerativeRecaller(cfg).fit(data)
            fits.append(time.perf_counter() - t)
        store = FeatureStore.load(c.lake, 2)
    known = store.user_ids
    users = np.random.default_rng(0).choice(known, size=max(args.requests, 256))
    k = args.beam
    single = []
    for u in users[: args.requests]:
        batch = store.user_batch(np.array([u]))
        t = time.perf_counter()
        model.recall(batch, k)
        single.append((time.perf_counter() - t) * 1000)
    big = store.user_batch(users[:256])
    rates = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.recall(big, k)
        rates.append(256 / (time.perf_counter() - t))
    m = model.metrics_
    load_after = os.getloadavg()
    rows = [[f"{np.median(fits):.1f}", f"{m['ids_seconds']:.1f}", f"{m['model_seconds']:.1f}",
             f"{np.percentile(single, 50):.1f}", f"{np.percentile(single, 99):.1f}", f"{np.median(rates):,.0f}"]]
    append(f"Generative recall speed, `{args.scenario}` world, beam {args.beam}, model.arch {cfg.model.arch}",
           ["train s per day (median)", "ids s", "model s", "p50 ms, 1 request", "p99 ms, 1 request",
            "requests/s, batch 256"], rows,
           notes=f"config: configs/experiments/generative.yaml; training on day 1's logs "
                 f"({len(data.click_item):,} clicks, {data.catalog.n_items:,} items), median of {args.fits}; "
                 f"latency over {args.requests} single requests; batch of 256 median of {args.repeats}; {m['parameters']:.0f} parameters; "
                 f"{args.threads} torch threads; niceness {os.nice(0)}; load average "
                 f"(1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} at the start, "
                 f"{'/'.join(f'{x:.1f}' for x in load_after)} at the end")
    print(rows)


if __name__ == "__main__":
    main()
