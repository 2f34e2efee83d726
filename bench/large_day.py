"""One day of a scenario end to end (publish, features, serve, clicks, samples, train, report).

The day's story and the components, as the flows call them, without Prefect or MLflow. Run under
`/usr/bin/time -v` for the peak memory; each stage's wall time is printed and appended to
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", default="large")
    p.add_argument("--experiment", default="default")
    p.add_argument("--data-dir", default=None, help="default: a temporary directory")
    args = p.parse_args()

    from bench.results import append
    from components import samples, training
    from components.experiment import load_experiment
    from components.features.store import build_features
    from sim.config import load_scenario
    from story import models
    from story.campaign import create_campaign
    from story.day import run_day
    from story.report import report_day
    from story.world import publish_catalog

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="reclab-large-"))
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    c = create_campaign(data_dir, f"bench-{args.scenario}", load_scenario(args.scenario),
                        load_experiment(args.experiment), None)

    def simulate() -> dict[str, float]:
        publish_catalog(c, 0)
        build_features(c.lake, 0)
        models.train_bootstrap(c)
        return run_day(c, 0)

    def train() -> dict[str, float]:
        out = c.models_dir(0)
        return training.train_channels(c.lake, 0, c.experiment, out) | \
            training.train_rankers(c.lake, 0, c.experiment, out)

    for name, stage in (("simulate", simulate), ("build_samples", lambda: samples.build_samples(c.lake, 0)),
                        ("train", train), ("report", lambda: report_day(c, 0))):
        t = time.perf_counter()
        out = stage()
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
