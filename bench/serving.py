"""Serving latency per request and simulator throughput, on the `small` world.

Builds a two-day lake with the day's story (story/, what the flows call, without Prefect or MLflow),
trains the day-1 models, then serves batches of several sizes with the treatment arm's pipeline.
Each configuration runs `--repeats` times; the table shows the median of the runs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.days import serve_day, train_day
from bench.results import append
from components.experiment import load_experiment
from components.features.store import FeatureStore, build_features
from sim import behavior
from sim.config import load_scenario
from sim.rng import stream
from sim.state import initial_state
from story import models
from story.campaign import create_campaign
from story.plan import arms_of_day


def build(data_dir: Path, scenario: str, experiment: str = "default"):
    c = create_campaign(data_dir, "bench", load_scenario(scenario), load_experiment(experiment), None)
    for day in (0, 1):
        serve_day(c, day)
        train_day(c, day)
    build_features(c.lake, 2)
    return c


def serving_rows(c, batch_sizes: list[int], requests: int, repeats: int) -> list[list[object]]:
    _, arms = arms_of_day(c, 2)
    pipe = models.pipelines_from_folder(c, 2, arms)["treatment"]
    store = FeatureStore.load(c.lake, 2)
    users = np.random.default_rng(0).integers(0, c.world.n_users, size=requests)
    rows = []
    for bs in batch_sizes:
        p50s, p99s, rates = [], [], []
        for _ in range(repeats):
            lat = []
            start = time.perf_counter()
            for s in range(0, requests, bs):
                t = time.perf_counter()
                pipe.serve(store.user_batch(users[s:s + bs]))
                lat += [(time.perf_counter() - t) * 1000] * len(users[s:s + bs])
            rates.append(requests / (time.perf_counter() - start))
            p50s.append(np.percentile(lat, 50))
            p99s.append(np.percentile(lat, 99))
        rows.append([bs, f"{np.median(p50s):.2f}", f"{np.median(p99s):.2f}", f"{np.median(rates):,.0f}"])
    return rows


def sim_rate(c, repeats: int) -> float:
    world = c.world
    state = initial_state(world)
    rng = stream(0, 0, "bench")
    users = rng.integers(0, world.n_users, 20_000)
    slates = rng.integers(0, world.n_items, (20_000, 10))
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        behavior.respond(world, state, users, slates, rng.random(len(users)))
        rates.append(slates.size / (time.perf_counter() - t))
    return float(np.median(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", default="small")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-sizes", default="1,16,64")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = build(Path(tmp), args.scenario)
        rows = serving_rows(c, [int(b) for b in args.batch_sizes.split(",")], args.requests, args.repeats)
        rate = sim_rate(c, args.repeats)
    append(f"Serving latency, treatment arm (popular + item-CF + MLP), `{args.scenario}` world",
           ["batch size", "p50 ms per request", "p99 ms per request", "requests/s"], rows,
           notes=f"median of {args.repeats} runs of {args.requests} requests; a request's latency is its "
                 f"batch's wall-clock time. Simulator: {rate:,.0f} impressions/s (world.respond on "
                 f"20,000 slates of 10 in one call)")
    for r in rows:
        print(r)
    print(f"simulator impressions/s: {rate:,.0f}")


if __name__ == "__main__":
    main()
