"""Scale-out of a day: requests split into user-hash shards, served in parallel by a task runner.

`local` with one shard is the default, in-process path. More shards run on Prefect's thread pool
(`local`) or on a Dask cluster (`dask`): the existing cluster at the address given, else at
DASK_SCHEDULER_ADDRESS (what the team stack's worker has), else a LocalCluster of one process per
core. The day's tables do not depend on the number of shards. Every shard needs a slot of its own
(they meet each micro-batch to share item events); an existing cluster with fewer slots than shards
fails with one line after `online_store.shard_wait_s`.
"""
from __future__ import annotations

import os

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from common.typedconf import ConfigError
from flows import tasks

SCALES = ("local", "dask")


def check(scale: str, shards: int) -> None:
    """Fail early, naming the setting."""
    if scale not in SCALES:
        raise ConfigError(f"--scale: {scale!r} is not allowed; choose one of {list(SCALES)}")
    if shards < 1:
        raise ConfigError(f"--shards: must be at least 1, got {shards}")


def task_runner(scale: str, shards: int, address: str | None):
    if scale == "dask":
        from prefect_dask import DaskTaskRunner

        address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        if address:
            return DaskTaskRunner(address=address)
        workers = max(1, min(shards, os.cpu_count() or 1))
        # A slot per shard: the shards of a day serve side by side, each waiting for the others'
        # item events of every micro-batch, so a shard queued behind another would never start.
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": -(-shards // workers),
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=shards)


@flow(name="serve_shards", flow_run_name="serve-shards-day-{day}")
def serve_shards(data_dir: str = "data", day: int = 0, shards: int = 2) -> list[str]:
    """Serve every shard of the day through this flow's task runner; returns the shard files."""
    futures = [tasks.serve_shard.submit(data_dir, day, index, shards) for index in range(shards)]
    return [f.result() for f in futures]


def run_shards(data_dir: str, day: int, scale: str = "local", shards: int = 1,
               address: str | None = None) -> list[str]:
    check(scale, shards)
    if scale == "local" and shards == 1:
        return [tasks.serve_shard(data_dir, day, 0, 1)]
    return serve_shards.with_options(task_runner=task_runner(scale, shards, address))(data_dir, day, shards)
