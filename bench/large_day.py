"""One day of a scenario end to end (publish, features, serve, clicks, samples, train, report).

Run under `/usr/bin/time -v` for the peak memory; each stage's wall time is printed and appended to
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", default="large")
    p.add_argument("--experiment", default="default")
    p.add_argument("--data-dir", default=None, help="default: a temporary directory")
    args = p.parse_args()

    from bench.results import append
    from components.serving import load_experiment
    from flows.campaign_state import create_campaign
    from flows.stages import build_samples, report, simulate_day, train
    from sim.config import load_scenario

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="reclab-large-"))
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    create_campaign(data_dir, f"bench-{args.scenario}", load_scenario(args.scenario),
                    load_experiment(args.experiment), None)
    for name, stage in (("simulate", simulate_day), ("build_samples", build_samples), ("train", train),
                        ("report", report)):
        t = time.perf_counter()
        out = stage(data_dir=str(data_dir), day=0)
        times[name] = time.perf_counter() - t
        print(f"{name}: {times[name]:.1f} s", {k: v for k, v in (out.items() if isinstance(out, dict) else [])
                                                 if "requests" in k}, flush=True)
    times["total"] = time.perf_counter() - t0
    print(json.dumps(times))
    append(f"One day (day 0, logging policy, then samples and training) of the `{args.scenario}` scenario",
           ["stage", "wall s"], [[k, f"{v:.1f}"] for k, v in times.items()],
           notes="one run; for peak memory run it under /usr/bin/time -v")


if __name__ == "__main__":
    main()
