"""A day of the closed loop, and a campaign: a bootstrap day then N days of the A/B experiment."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from common.typedconf import ConfigError, to_mapping
from components.reports import summary_rows
from flows import progress, tracking
from flows.params import Experiment, Scale, Scenario, WorldKnobs, knob_overrides
from flows.recovery import claim
from flows.stages import build_samples, day_metrics, report, simulate_day, train
from story.campaign import open_campaign, resolve_campaign
from story.tables import ONLINE_PREFIX

STAGES_PER_DAY = 4


def _logger():
    """The run's logger inside a Prefect run (its lines reach the UI), else this module's."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _daily_run_name() -> str:
    from prefect.runtime import flow_run

    day = flow_run.parameters.get("day")
    return f"day-{day}" if day is not None else "next-day"


@flow(name="daily", flow_run_name=_daily_run_name)
def daily(data_dir: str = "data", day: int | None = None, scale: Scale = "local", shards: int = 1,
          dask_address: str | None = None) -> list[dict]:
    """Simulate `day` (default: the day after the last reported one) with the models of the day
    before, then build samples, train and report.

    Args:
        data_dir: The campaign's data directory; the campaign must have been started there.
        day: The day to run; empty for the day after the last reported one.
        scale: Where the day's requests are served: local (this process) or dask (a Dask cluster).
        shards: User-hash shards the day's requests are split into; the tables do not depend on it.
        dask_address: Scheduler of a Dask cluster (default: DASK_SCHEDULER_ADDRESS, else a LocalCluster).
    """
    with claim(data_dir):
        c = open_campaign(data_dir)
        if day is None:
            reported = c.lake.days("ab_daily")
            day = reported[-1] + 1 if reported else 0
        with tracking.run(c, f"day-{day}", {"day": day}) as run_id, tracking.nested_under(run_id):
            log = _logger()
            log.info("day %d: simulate (%s, %d shard%s)", day, scale, shards, "" if shards == 1 else "s")
            progress.stage(f"day {day}: simulate")
            served = simulate_day(data_dir, day, scale, shards, dask_address)
            log.info("day %d: build samples", day)
            progress.stage(f"day {day}: build samples")
            build_samples(data_dir, day)
            log.info("day %d: train", day)
            progress.stage(f"day {day}: train")
            train(data_dir, day)
            log.info("day %d: report", day)
            progress.stage(f"day {day}: report")
            rows = report(data_dir, day)
            for r in rows:
                log.info("day %d %s: CTR %.4f over %d requests", day, r["arm"], r["ctr"], r["requests"])
            # The online store's cache and server figures (kind redis only) are the day's too.
            online = {k: v for k, v in served.items() if k.startswith(ONLINE_PREFIX)}
            tracking.log_metrics(c, run_id, day_metrics(rows) | online, step=day)
    return rows


@task(cache_policy=NO_CACHE)
def prepare_campaign(data_dir: str, scenario: str, experiment: str, seed: int | None,
                     name: str | None, world: WorldKnobs | None = None, online_store: str | None = None) -> str:
    """Resolve the configs and write the campaign's manifest into `data_dir`."""
    return resolve_campaign(Path(data_dir), scenario, experiment, seed, name, knob_overrides(world),
                            online_store).name


@flow(name="campaign", flow_run_name="campaign-{scenario}-{experiment}-{days}d")
def campaign(scenario: Scenario = "small", experiment: Experiment = "default", days: int = 3,
             data_dir: str = "data", seed: int | None = None, name: str | None = None,
             rerun: bool = False, scale: Scale = "local", shards: int = 1,
             dask_address: str | None = None, world: WorldKnobs | None = None,
             online_store: str | None = None) -> list[dict]:
    """Day 0 served by the logging policy, then `days` days of the A/B experiment.

    Days already complete in `data_dir` (reported, models published) are kept, so a campaign
    that was stopped resumes where it stopped; `rerun` runs every day again. `scale` and `shards`
    say where the days' requests are served (see flows/scale.py), never what they give.

    Args:
        scenario: The world: a preset of configs/scenarios (users, items, traffic, seed).
        experiment: The A/B experiment: a preset of configs/experiments (arms, models, shares).
        days: A/B days after the bootstrap day 0.
        data_dir: Where the lake, the models and the world state go (the stack's data directory).
        seed: Overrides the scenario's seed; empty keeps it. One seed reproduces every table.
        name: MLflow experiment name; empty derives it from the scenario and experiment.
        rerun: Run every day again instead of keeping the days already complete.
        scale: Where each day's requests are served: local (this process) or dask (a Dask cluster).
        shards: User-hash shards per day; the tables do not depend on it.
        dask_address: Scheduler of a Dask cluster (default: DASK_SCHEDULER_ADDRESS, else a LocalCluster).
        world: Scenario knobs over the preset (users, items, cold start, organic share, drift,
            fatigue, position bias, churn); empty ones keep the preset's values.
        online_store: A Redis URL (redis://host:port/db) to serve features from, as the experiment's
            `online_store: {kind: redis, url}` would; empty keeps the experiment's store. The team
            stack prints its own (`reclab up --team`); the tables are the same either way.
    """
    if days < 1:
        raise ConfigError(f"days: a campaign needs at least 1 A/B day after the bootstrap, got {days}")
    with claim(data_dir):
        prepare_campaign(data_dir, scenario, experiment, seed, name, world, online_store)
        c = open_campaign(data_dir)
        first = 0 if rerun else c.first_incomplete_day(days)
        params = {"scenario": to_mapping(c.scenario), "experiment": to_mapping(c.experiment),
                  "days": days}
        progress.start((days + 1 - first) * STAGES_PER_DAY, f"campaign {c.name}")
        rows: list[dict] = []
        with tracking.run(c, "campaign", params) as run_id, tracking.nested_under(run_id):
            tracking.set_tags(c, run_id, {"reclab.first_day_run": str(first)})
            for day in range(days + 1):
                # A kept day's rows come from the lake, so the run's charts cover every day.
                day_rows = (daily(data_dir, day, scale, shards, dask_address) if day >= first
                            else summary_rows(c.lake, [day]))
                tracking.log_metrics(c, run_id, day_metrics(day_rows), step=day)
                rows += day_rows
    return rows
