"""Every flow as a Prefect deployment, so users run them from the Prefect UI.

Two ways to run them. Without arguments this process serves the deployments itself: it polls
PREFECT_API_URL for their runs and executes them (`reclab up`). With `--work-pool NAME` it only
registers them in that process work pool and exits; a `prefect worker` of the pool then runs each
flow run in its own process (`reclab up --team`, compose). Each flow's typed parameters are
editable in the UI; `daily` has a nightly schedule, paused until a user turns it on.
"""
from __future__ import annotations

import argparse
import os

from prefect import serve
from prefect.deployments.runner import EntrypointType

from flows.campaign import campaign, daily
from flows.stages import build_samples, report, simulate_day, train

FLOWS = (campaign, daily, simulate_day, build_samples, train, report)
DAILY_CRON = "0 2 * * *"


def _deployments(module_path: bool) -> list:
    # The stack's data directory becomes the form's default, so a run from the UI lands where
    # the dashboard and every other service look.
    data_dir = os.environ.get("RECLAB_DATA_DIR")
    out = []
    for f in FLOWS:
        extra = {"cron": DAILY_CRON, "paused": True} if f is daily else {}
        if data_dir:
            extra["parameters"] = {"data_dir": data_dir}
        if module_path:
            # A worker imports the flow by module name from its own checkout: no code storage.
            extra["entrypoint_type"] = EntrypointType.MODULE_PATH
        out.append(f.to_deployment(name="reclab", tags=["reclab"], **extra))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work-pool", default=None,
                   help="register the deployments in this process work pool and exit (default: serve them)")
    args = p.parse_args(argv)
    if args.work_pool:
        # Each deployment applied on its own: `prefect.deploy` first lists the pool's workers,
        # a request Prefect 3.8's own server refuses (422, limit None).
        for d in _deployments(module_path=True):
            d.apply(work_pool_name=args.work_pool)
        print(f"registered {len(FLOWS)} deployments in work pool {args.work_pool}")
    else:
        serve(*_deployments(module_path=False), print_starting_message=True)


if __name__ == "__main__":
    main()
