"""Simulator throughput: impressions per second per core, and the oracle's cost per request.

Pinned to one core (sched_setaffinity, and threadpoolctl for BLAS), so the figure is per core. The
machine is shared: the headline divides by the CPU time the pinned process got (process_time),
which is what one core delivers; the wall-clock rate, lower when other jobs take the core, is
reported beside it. The world's state carries a day of exposures (fatigue lookups) and popularity, as on day 1 of a campaign.
Writes bench/world.json and a section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from sim import behavior
from sim.config import load_scenario
from sim.rng import stream
from sim.state import DayLog, advance, initial_state
from sim.world import make_world

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", default="large")
    p.add_argument("--requests", type=int, default=100_000, help="slates per timed pass")
    p.add_argument("--slate-size", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--oracle-requests", type=int, default=200)
    args = p.parse_args()
    from bench.results import append, conditions, conditions_note

    load_before = os.getloadavg()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    cfg = load_scenario(args.scenario)
    world = make_world(cfg, 1)
    rng = stream(cfg.seed, 0, "bench")
    # A day of random exposures and clicks, so fatigue and popularity lookups cost what they cost.
    n, k = args.requests, args.slate_size
    warm_users = rng.integers(0, make_world(cfg, 0).n_users, n)
    warm_items = rng.integers(0, len(initial_state(make_world(cfg, 0)).item_clicks), (n, k))
    state = advance(world, initial_state(make_world(cfg, 0)),
                    DayLog(np.repeat(warm_users, k), warm_items.reshape(-1), rng.random(n * k) < 0.03))
    users = rng.integers(0, world.n_users, n)
    users[: n // 2] = warm_users[: n // 2]        # half the requests meet items they have seen
    slates = rng.integers(0, world.n_items, (n, k))
    slates[: n // 2, :3] = warm_items[: n // 2, :3]
    request_ids = np.arange(n, dtype=np.int64) + 10**9
    rates, wall_rates = [], []
    with threadpool_limits(1):
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            uniform = behavior.request_uniform(cfg.seed, 1, request_ids)
            clicks = behavior.respond(world, state, users, slates, uniform).clicked
            rates.append(clicks.size / (time.process_time() - c))
            wall_rates.append(clicks.size / (time.perf_counter() - t))
        m = args.oracle_requests
        oracle_s = []
        for _ in range(max(1, args.repeats // 2)):
            c = time.process_time()
            behavior.reference_ctr(world, state, users[:m], k, request_ids[:m], day=1)
            oracle_s.append((time.process_time() - c) / m)
    rate, per_req, wall_rate = float(np.median(rates)), float(np.median(oracle_s)), float(np.median(wall_rates))
    sample = cfg.oracle.sample_requests
    machine = conditions(load_before)
    result = {"scenario": args.scenario, "users": world.n_users, "items": world.n_items, "slate_size": k,
              "requests_per_pass": n, "impressions_per_s_per_core": rate, "runs": rates,
              "impressions_per_s_wall": wall_rate, **machine,
              "oracle_ms_per_request": per_req * 1000, "oracle_sample_requests": sample,
              "oracle_s_per_day_at_sample": per_req * sample if sample else None, "click_rate": float(clicks.mean())}
    # One JSON per scenario, so each section keeps the file its figures came from.
    out = HERE / ("world.json" if args.scenario == "large" else f"world-{args.scenario}.json")
    out.write_text(json.dumps(result, indent=2))
    append(f"World throughput, `{args.scenario}` scenario ({world.n_users:,} users, {world.n_items:,} items), one core",
           ["measure", "value"],
           [["impressions simulated per CPU-second of one core (respond: utilities, fatigue, MNL choice)", f"{rate:,.0f}"],
            ["same, per wall-clock second on the shared machine", f"{wall_rate:,.0f}"],
            ["oracle + random reference, CPU ms per request (all items)", f"{per_req * 1000:.1f}"],
            ["oracle per day at the scenario's sample", f"{per_req * sample:.1f} s for {sample} requests" if sample
             else "every request"]],
           notes=f"median of {args.repeats} passes of {n:,} slates of {k}; pinned to core {core}, BLAS 1 thread; "
                 f"oracle timed on {m} requests; figures in bench/{out.name}; {conditions_note(machine)}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
