"""What a day costs against the size of the world: wall time per stage, peak memory per process,
bytes written, at several user counts, and the fitted growth.

Each point is the `large` scenario resized (users as given, items a tenth of them, arrivals in the
same proportion) and one day of it end to end, as bench/large_day.py runs it: publish, features,
the bootstrap models, plan, serve, finish (oracle, tables, next state), samples, training, report.
Each point runs in a process of its own (`--point`), so its peak RSS is its own; on the Dask path
the shards are served by a LocalCluster's worker processes (or the scheduler at --address), whose
RSS is sampled beside the driver's. Writes bench/scale.json, bench/scale.png and a RESULTS section.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = "large"


def scenario(users: int):
    """The `large` world at `users` users, items a tenth of them, daily arrivals in proportion."""
    from dataclasses import replace

    from sim.config import load_scenario
    base = load_scenario(SCENARIO)
    u, i = base.users, base.items
    return replace(base, name=f"{SCENARIO}-{users}",
                   users=replace(u, n=users, new_per_day=round(u.new_per_day * users / u.n)),
                   items=replace(i, n=max(users // 10, 100), new_per_day=round(i.new_per_day * users / u.n)))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def point(users: int, experiment: str, scale: str, workers: int, address: str | None, data_dir: Path) -> dict:
    """One day of the resized world in this process (and its Dask workers); the figures of each stage."""
    from bench.memwatch import MemWatch, peak_bytes
    from components import samples, training
    from components.experiment import load_experiment
    from components.features.store import build_features
    from story import models
    from story.campaign import create_campaign
    from story.day import finish_day, finish_from_files, plan_to_file, serve_shard, serve_shard_to_file
    from story.plan import plan_day
    from story.report import report_day
    from story.world import publish_catalog

    watch = MemWatch()
    c = create_campaign(data_dir, f"scale-{users}", scenario(users), load_experiment(experiment), None)
    client = cluster = None
    if scale == "dask":
        from distributed import Client, LocalCluster
        if address:
            client = Client(address)
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        watch.also = list(client.run(os.getpid).values())
    with watch.stage("publish"):
        publish_catalog(c, 0)
    with watch.stage("features"):
        build_features(c.lake, 0)
    with watch.stage("bootstrap"):
        models.train_bootstrap(c)
    if client is None:
        with watch.stage("plan"):
            plan = plan_day(c, 0)
        with watch.stage("serve"):
            served = serve_shard(c, plan, 0, 1)
        with watch.stage("finish"):
            finish_day(c, plan, served)
        del plan, served
    else:
        with watch.stage("plan"):
            plan_to_file(c, 0)
        with watch.stage("serve"):
            futures = [client.submit(serve_shard_to_file, c, 0, i, workers, pure=False) for i in range(workers)]
            client.gather(futures)
        with watch.stage("finish"):
            finish_from_files(c, 0, workers)
    with watch.stage("samples"):
        rows = samples.build_samples(c.lake, 0)
    with watch.stage("train"):
        out = c.models_dir(0)
        training.train_channels(c.lake, 0, c.experiment, out)
        training.train_rankers(c.lake, 0, c.experiment, out)
    with watch.stage("report"):
        report_day(c, 0)
    watch.close()
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()
    requests = c.lake.read("requests", 0).num_rows
    stages = watch.stages
    return {"users": users, "items": c.scenario.items.n, "requests": requests, "impressions": rows,
            "scale": scale, "workers": workers if scale == "dask" else 1,
            "wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
            "peak_rss_gb": round(peak_bytes() / 2**30, 3),
            "worker_peak_rss_gb": max((s.get("worker_peak_rss_gb", 0.0) for s in stages.values()), default=0.0),
            "bytes_written": du(data_dir), "stages": stages}


def fit(points: dict[str, dict]) -> dict:
    """Least squares of log(y) on log(users): y ~ a * users**b, for wall time and peak RSS."""
    import numpy as np
    users = np.array([float(u) for u in points])
    out = {}
    if len(users) < 2:
        return out
    for key in ("wall_s", "peak_rss_gb", "bytes_written"):
        y = np.array([float(p[key]) for p in points.values()])
        b, log_a = np.polyfit(np.log(users), np.log(y), 1)
        out[key] = {"exponent": round(float(b), 3), "coefficient": float(np.exp(log_a)),
                    "at_10M": round(float(np.exp(log_a) * 1e7 ** b), 2)}
    return out


def run_point(args, users: int, experiment: str, scale: str) -> dict:
    """The point in a process of its own, its data directory removed after."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"reclab-scale-{users}-", dir=args.work))
    out = data_dir.with_suffix(".json")
    cmd = [sys.executable, "-m", "bench.scale", "--point", "--users", str(users), "--experiment", experiment,
           "--scale", scale, "--workers", str(args.workers), "--data-dir", str(data_dir), "--out", str(out)]
    if args.address:
        cmd += ["--address", args.address]
    load = os.getloadavg()
    print(f"== {experiment} {users} users ({scale})", flush=True)
    try:
        subprocess.run(cmd, check=True)
        result = json.loads(out.read_text())
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        out.unlink(missing_ok=True)
    result["load_before"] = round(load[0], 2)
    result["load_after"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--users", default="100000,300000,1000000", help="comma-separated user counts")
    p.add_argument("--experiments", default="default,full")
    p.add_argument("--full-max", type=int, default=300_000, help="largest world for experiments other than default")
    p.add_argument("--dask-users", default="", help="user counts also run on the Dask path, e.g. 1000000,3000000")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (and shards)")
    p.add_argument("--address", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), help="an existing scheduler")
    p.add_argument("--work", default=None, help="where the points' data directories go (default: a temp dir)")
    p.add_argument("--point", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--experiment", default="default", help=argparse.SUPPRESS)
    p.add_argument("--scale", default="local", choices=("local", "dask"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.point:
        result = point(int(args.users), args.experiment, args.scale, args.workers, args.address, Path(args.data_dir))
        Path(args.out).write_text(json.dumps(result))
        return
    try:
        sizes = [int(u) for u in args.users.split(",") if u]
        dask_sizes = [int(u) for u in args.dask_users.split(",") if u]
    except ValueError:
        sys.exit(f"--users/--dask-users: comma-separated whole numbers, got {args.users!r} / {args.dask_users!r}")
    args.work = args.work or tempfile.mkdtemp(prefix="reclab-scale-")
    from bench.scale_report import write
    plan = [(e, u, "local") for e in args.experiments.split(",") if e for u in sizes
            if e == "default" or u <= args.full_max] + [("default", u, "dask") for u in dask_sizes]
    results: dict[str, dict] = {}
    for experiment, users, scale in plan:
        name = experiment if scale == "local" else f"{experiment}-dask"
        results.setdefault(name, {})[str(users)] = run_point(args, users, experiment, scale)
        # The JSON and picture after every point, so a run cut short keeps what it measured.
        write(results, {n: fit(points) for n, points in results.items()}, args.workers, section=False)
    write(results, {n: fit(points) for n, points in results.items()}, args.workers)


if __name__ == "__main__":
    main()
