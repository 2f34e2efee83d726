"""Serve every flow as a Prefect deployment, so users run them from the Prefect UI."""
from __future__ import annotations

from prefect import serve

from flows.campaign import campaign, daily
from flows.stages import build_samples, report, simulate_day, train

FLOWS = (campaign, daily, simulate_day, build_samples, train, report)


def main() -> None:
    serve(*(f.to_deployment(name="reclab") for f in FLOWS))


if __name__ == "__main__":
    main()
