"""Per-stage latency of each arm's full pipeline (recall, merge, coarse, fine) for one request,
and throughput at batch 256, on a world built by bench.serving (two days of the experiment's
campaign, models trained on day 1 serving day 2; the full.yaml arms by default).

    python -m bench.pipeline_latency [--experiment full] [--scenario small] [--requests 300] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.results import append
from bench.serving import build
from components.contracts import STAGES
from components.features.store import FeatureStore
from story.models import pipelines_from_folder
from story.plan import arms_of_day


def measure(pipe, store, users: np.ndarray, batch: int) -> tuple[dict[str, list[float]], float]:
    """Per-stage ms of every batch, and requests per second over the whole run."""
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    start = time.perf_counter()
    for lo in range(0, len(users), batch):
        ids = users[lo:lo + batch]
        res = pipe.serve(store.user_batch(ids, ids))
        for s in STAGES:
            stages[s].append(res.timings_ms[s])
    return stages, len(users) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="full", help="experiment preset whose arms are measured")
    p.add_argument("--scenario", default="small")
    p.add_argument("--requests", type=int, default=300, help="single requests timed per run")
    p.add_argument("--batch-requests", type=int, default=2048, help="requests served in batches of 256 per run")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        c = build(Path(tmp), args.scenario, args.experiment)
        build_s = time.perf_counter() - t0
        load = [os.getloadavg()[0]]
        _, arms = arms_of_day(c, 2)
        pipes = pipelines_from_folder(c, 2, arms)
        store = FeatureStore.load(c.lake, 2)
        rng = np.random.default_rng(0)
        for arm, pipe in pipes.items():
            p50 = {s: [] for s in STAGES}
            p99 = {s: [] for s in STAGES}
            rates = []
            for _ in range(args.repeats):
                single, _ = measure(pipe, store, rng.integers(0, c.world.n_users, args.requests), 1)
                for s in STAGES:
                    p50[s].append(np.percentile(single[s], 50))
                    p99[s].append(np.percentile(single[s], 99))
                rates.append(measure(pipe, store, rng.integers(0, c.world.n_users, args.batch_requests), 256)[1])
                load.append(os.getloadavg()[0])
            a = c.experiment.arms[arm]
            stack = f"{'+'.join(a.channels)} / {a.coarse} / {a.fine_ranker}"
            rows.append([arm, stack, *(f"{np.median(p50[s]):.2f} / {np.median(p99[s]):.2f}" for s in STAGES),
                         f"{np.median(rates):,.0f}"])
    append(f"Full pipeline latency per stage, `{args.experiment}` experiment, `{args.scenario}` world",
           ["arm", "channels / coarse / fine", *(f"{s} p50/p99 ms (batch 1)" for s in STAGES), "requests/s at batch 256"],
           rows, notes=f"median over {args.repeats} runs of {args.requests} single requests and "
                       f"{args.batch_requests} requests in batches of 256 (p50/p99 over the single requests of a run); "
                       f"world built and models trained in {build_s:.0f} s; shared machine: 1-minute load "
                       f"average {min(load):.1f} to {max(load):.1f} on {os.cpu_count()} cores during the "
                       f"measurements (os.getloadavg)")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
