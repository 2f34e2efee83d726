"""Serve every flow as a Prefect deployment, so users run them from the Prefect UI.

The process polls PREFECT_API_URL for runs of these deployments and executes them; each flow's
typed parameters are editable in the UI. `daily` has a nightly schedule, paused until a user
turns it on.
"""
from __future__ import annotations

from prefect import serve

from flows.campaign import campaign, daily
from flows.stages import build_samples, report, simulate_day, train

FLOWS = (campaign, daily, simulate_day, build_samples, train, report)
DAILY_CRON = "0 2 * * *"


def main() -> None:
    deployments = [
        f.to_deployment(name="reclab", tags=["reclab"],
                        **({"cron": DAILY_CRON, "paused": True} if f is daily else {}))
        for f in FLOWS
    ]
    serve(*deployments, print_starting_message=True)


if __name__ == "__main__":
    main()
