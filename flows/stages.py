"""The stage flows of one day; each is one MLflow run, nested under its day when run by `daily`."""
from __future__ import annotations

from prefect import flow

from common.typedconf import to_mapping
from components import recall_eval
from flows import tasks, tracking
from story.campaign import open_campaign
from flows.recovery import claim
from flows.params import Scale
from flows.scale import run_shards


@flow(name="simulate_day", flow_run_name="simulate-day-{day}")
def simulate_day(data_dir: str = "data", day: int = 0,
                 scale: Scale = "local", shards: int = 1, dask_address: str | None = None) -> dict[str, float]:
    """Serve one day of traffic and record requests, impressions and the world's reference CTRs.

    Args:
        data_dir: The campaign's data directory (lake, models, world state).
        day: The day to simulate; day 0 is served by the logging policy.
        scale: Where the day's requests are served: local (this process) or dask (a Dask cluster).
        shards: User-hash shards the day's requests are split into; the tables do not depend on it.
        dask_address: Scheduler of a Dask cluster (default: DASK_SCHEDULER_ADDRESS, else a LocalCluster).
    """
    with claim(data_dir):
        c = open_campaign(data_dir)
        with tracking.run(c, f"day-{day}/simulate", {"day": day}) as run_id:
            tasks.publish_catalog(data_dir, day)
            tasks.features_for(data_dir, day)
            if day == 0:
                tasks.train_bootstrap(data_dir)
            tasks.plan_day(data_dir, day)
            run_shards(data_dir, day, scale, shards, dask_address)
            metrics = tasks.finish_day(data_dir, day, shards)
            tracking.log_metrics(c, run_id, metrics, step=day)
    return metrics


@flow(name="build_samples", flow_run_name="build-samples-{day}")
def build_samples(data_dir: str = "data", day: int = 0) -> int:
    """Join the day's impressions to point-in-time features.

    Args:
        data_dir: The campaign's data directory (lake, models, world state).
        day: The day, whose earlier stages have run.
    """
    with claim(data_dir):
        c = open_campaign(data_dir)
        with tracking.run(c, f"day-{day}/build_samples", {"day": day}) as run_id:
            rows = tasks.build_samples(data_dir, day)
            match = tasks.check_consistency(data_dir, day)
            tracking.log_metrics(c, run_id, {"samples": rows, **{f"features.{k}": v for k, v in match.items()}},
                                 step=day)
    return rows


@flow(name="train", flow_run_name="train-{day}")
def train(data_dir: str = "data", day: int = 0) -> dict[str, float]:
    """Fit the recall channels and rankers on logs up to `day`; they serve day + 1.

    Args:
        data_dir: The campaign's data directory (lake, models, world state).
        day: The day, whose earlier stages have run.
    """
    with claim(data_dir):
        c = open_campaign(data_dir)
        params = {"day": day, "models": to_mapping(c.experiment.models)}
        with tracking.run(c, f"day-{day}/train", params) as run_id:
            tasks.start_training(data_dir, day)
            metrics = tasks.train_channels(data_dir, day) | tasks.train_rankers(data_dir, day)
            record = tasks.record_lineage(data_dir, day)
            models = tasks.publish_models(data_dir, day)
            tracking.log_metrics(c, run_id, metrics, step=day)
            tracking.log_lineage(c, run_id, record)
            version = tasks.register_models(data_dir, day, run_id)
            tracking.set_tags(c, run_id, {"reclab.models_dir": models, "reclab.model_version": version})
    return metrics


@flow(name="report", flow_run_name="report-{day}")
def report(data_dir: str = "data", day: int = 0) -> list[dict]:
    """A/B statistics and latency percentiles of the day.

    Args:
        data_dir: The campaign's data directory (lake, models, world state).
        day: The day, whose earlier stages have run.
    """
    with claim(data_dir):
        c = open_campaign(data_dir)
        with tracking.run(c, f"day-{day}/report", {"day": day}) as run_id:
            rows = tasks.report_day(data_dir, day)
            recall = tasks.recall_day(data_dir, day)
            tasks.publish_summary(rows, day, c.name, recall)
            tracking.log_metrics(c, run_id, day_metrics(rows) | recall_metrics(recall), step=day)
            if recall:
                tracking.log_table(c, run_id, recall, f"recall-day-{day}.json")
            tracking.log_table(c, run_id, rows, f"summary-day-{day}.json")
    return rows


def recall_metrics(rows: list[dict]) -> dict[str, float]:
    return {recall_eval.metric_name(r): r["recall"] for r in rows}


def day_metrics(rows: list[dict]) -> dict[str, float]:
    keys = ("ctr", "ctr_expected", "ctr_oracle", "ctr_random", "p50", "p99", "lift", "p_value",
            "new_impression_share", "new_click_share", "items_shown", "items_clicked", "gini", "top1pct_share",
            "personalised_share")
    return {f"{r['arm']}.{k}": r[k] for r in rows for k in keys if r.get(k) is not None}
