"""Serving with the online store in the process against the Redis server with a warm local cache.

A campaign on the `small` world runs its days through the server store (a redis-server process
this script owns): features synced to the server each day, the day served from it, the samples'
consistency check run against the vectors computed from what the server returned. Then the next
day's requests (the plan's users, in time order) are served by the treatment arm's pipeline,
once per store: per request, lookup plus pipeline, p50 and p99 at each batch size. The server
store's cache is warmed by one untimed pass over the same requests (its first-pass hit rate is
reported too), and a store with no cache (one HMGET round trip per batch) shows what the tier
saves. Figures go to bench/online.json under "serving" (other keys kept) and a section of
RESULTS.md, both only when asked.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.days import serve_day, train_day
from bench.results import append, conditions, conditions_note, write_json_key
from components.experiment import load_experiment
from components.features import consistency
from components.features.online import OnlineStoreConfig, ServerStore, open_store, publish_features
from components.features.redis_process import RedisServer
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.plan import arms_of_day, plan_day
from story.world import publish_catalog

OUT = Path(__file__).resolve().parent / "online.json"


def build(data_dir: Path, scenario: str, days: int, cfg: OnlineStoreConfig):
    """`days` days served through the server store; day `days`'s features synced. -> campaign, match rates."""
    exp = replace(load_experiment("default"), online_store=cfg)
    c = create_campaign(data_dir, "bench", load_scenario(scenario), exp, None)
    checks = []
    for day in range(days):
        serve_day(c, day, lambda lake, d: publish_features(lake, d, cfg))
        checks.append(consistency.check(c.lake, day))
        train_day(c, day)
    publish_catalog(c, days)
    publish_features(c.lake, days, cfg)
    return c, checks


def timed(store, pipe, users: np.ndarray, bs: int) -> tuple[list[float], list[float]]:
    """Per request: lookup + serve ms, and lookup ms, of `users` in batches of `bs`."""
    total, lookup = [], []
    for s in range(0, len(users), bs):
        t0 = time.perf_counter()
        batch = store.user_batch(users[s:s + bs])
        t1 = time.perf_counter()
        pipe.serve(batch)
        t2 = time.perf_counter()
        n = len(users[s:s + bs])
        total += [(t2 - t0) * 1000] * n
        lookup += [(t1 - t0) * 1000] * n
    return total, lookup


def measure(c, day: int, cfg: OnlineStoreConfig, requests: int, repeats: int, batch_sizes: list[int]) -> dict:
    _, arms = arms_of_day(c, day)
    pipe = models.pipelines_from_folder(c, day, arms)["treatment"]
    plan = plan_day(c, day)
    users = plan.traffic.user_id[:requests]
    inproc = open_store(c.lake, day, None, OnlineStoreConfig())
    cold = ServerStore.open(c.lake, day, cfg)
    timed(cold, pipe, users, 1)                                  # the first pass: a cold cache
    cold_hit_rate = cold.hit_rate
    out = {"cold_hit_rate": cold_hit_rate, "by_batch": {}}
    for bs in batch_sizes:
        server = ServerStore.open(c.lake, day, cfg)
        timed(server, pipe, users, bs)                            # warm the local cache
        server.hits = server.misses = 0
        uncached = ServerStore.open(c.lake, day, replace(cfg, cache_size=0))   # a round trip per batch
        runs = {"inprocess": [], "server": [], "uncached": []}
        for _ in range(repeats):                                      # interleaved: the same machine state
            for name, store in (("inprocess", inproc), ("server", server), ("uncached", uncached)):
                runs[name].append(timed(store, pipe, users, bs))
        row = {"hit_rate": server.hit_rate}
        for name, rs in runs.items():
            row[f"{name}_p50_ms"] = float(np.median([np.percentile(t, 50) for t, _ in rs]))
            row[f"{name}_p99_ms"] = float(np.median([np.percentile(t, 99) for t, _ in rs]))
            row[f"{name}_lookup_p99_ms"] = float(np.median([np.percentile(lk, 99) for _, lk in rs]))
        out["by_batch"][str(bs)] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", default="small")
    p.add_argument("--days", type=int, default=2, help="days served through the server before the timed day")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--cache-size", type=int, default=100_000)
    p.add_argument("--no-results", action="store_true", help="print only: neither bench/online.json nor RESULTS.md")
    args = p.parse_args()
    load = os.getloadavg()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="reclab-online-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        cfg = OnlineStoreConfig(kind="redis", url=server.url, cache_size=args.cache_size)
        c, checks = build(Path(tmp) / "campaign", args.scenario, args.days, cfg)
        figures = measure(c, args.days, cfg, args.requests, args.repeats, sizes)
    first = figures["by_batch"][str(sizes[0])]
    compared = int(sum(ch["compared"] for ch in checks))
    result = {
        "scenario": args.scenario, "days_served_by_server": args.days, "requests": args.requests,
        "repeats": args.repeats, "batch": sizes[0], "cache_size": args.cache_size,
        "inprocess_p99_ms": first["inprocess_p99_ms"], "server_p99_ms": first["server_p99_ms"],
        "inprocess_p50_ms": first["inprocess_p50_ms"], "server_p50_ms": first["server_p50_ms"],
        "hit_rate": first["hit_rate"], "cold_hit_rate": figures["cold_hit_rate"],
        "consistency": sum(ch["matched"] for ch in checks) / compared if compared else None,
        "consistency_compared": compared, "by_batch": figures["by_batch"], "conditions": conditions(load),
    }
    print(json.dumps(result, indent=2))
    if args.no_results:
        return
    write_json_key(OUT, "serving", result)
    rows = [[bs, f"{r['inprocess_p50_ms']:.3f}", f"{r['server_p50_ms']:.3f}", f"{r['inprocess_p99_ms']:.3f}",
             f"{r['server_p99_ms']:.3f}", f"{r['server_p99_ms'] - r['inprocess_p99_ms']:+.3f}",
             f"{r['server_lookup_p99_ms']:.3f}", f"{r['uncached_p99_ms']:.3f}", f"{100 * r['hit_rate']:.1f} %"]
            for bs, r in figures["by_batch"].items()]
    append(f"Online store: in-process vs Redis server with a warm local cache, `{args.scenario}` world",
           ["batch", "in-process p50 ms", "server p50 ms", "in-process p99 ms", "server p99 ms", "p99 difference ms",
            "server lookup p99 ms", "no cache p99 ms", "cache hit rate"], rows,
           notes=f"figures in bench/online.json (key serving). Day {args.days}'s first {args.requests} requests "
                 f"(the plan's users, in time order), treatment arm, per request lookup + pipeline, median "
                 f"of {args.repeats} interleaved runs; cache warmed by one pass (first-pass hit rate "
                 f"{100 * figures['cold_hit_rate']:.1f} %); consistency of the {compared} logged vectors of days "
                 f"0-{args.days - 1} served by the server: {100 * result['consistency']:.1f} %; "
                 f"{conditions_note(result['conditions'])}")


if __name__ == "__main__":
    main()
