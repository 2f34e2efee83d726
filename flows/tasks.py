"""Prefect tasks: small, typed, passing the data directory and the day, never big tables."""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from components import recall_eval, samples, training
from components.features import consistency, lineage
from components.features.online import publish_features
from common.typedconf import to_mapping
from flows import progress, tracking
from story import day as story_day, models, report, world
from story.campaign import Campaign, open_campaign

# Tasks write to the lake, so a cached result would skip a write: caching stays off.
TASK = dict(cache_policy=NO_CACHE, persist_result=False)


@task(**TASK)
def publish_catalog(data_dir: str, day: int) -> dict[str, int]:
    """Write the items and users that appear on `day` into the lake."""
    return world.publish_catalog(open_campaign(data_dir), day)


@task(**TASK)
def features_for(data_dir: str, day: int) -> int:
    """Materialise the features valid for serving `day` (events of earlier days only), and sync
    them to the online store's server when the experiment has one."""
    c = open_campaign(data_dir)
    publish_features(c.lake, day, c.experiment.online_store)
    return day


@task(**TASK)
def train_bootstrap(data_dir: str) -> str:
    """Train the logging policy's models, which serve day 0."""
    return str(models.train_bootstrap(open_campaign(data_dir)))


@task(**TASK)
def plan_day(data_dir: str, day: int) -> str:
    """Draw the day's requests and their arms once, for every shard; returns the plan's file."""
    return story_day.plan_to_file(open_campaign(data_dir), day)


@task(**TASK)
def serve_shard(data_dir: str, day: int, index: int, shards: int) -> str:
    """Serve the requests of one user-hash shard and draw their clicks; returns the shard file."""
    c = open_campaign(data_dir)
    # A/B days are served by what the registry's arm aliases point at, as production would.
    pipelines = tracking.load_pipelines(c, day) if day > 0 else None
    return story_day.serve_shard_to_file(c, day, index, shards, pipelines, progress.track)


@task(**TASK)
def finish_day(data_dir: str, day: int, shards: int) -> dict[str, float]:
    """Gather the shards into the day's tables and move the world on to the next day."""
    return story_day.finish_from_files(open_campaign(data_dir), day, shards)


SAMPLE_INPUTS = ("impressions", "features_user", "features_item")


def _fingerprint(c: Campaign, day: int) -> str:
    """Content hash of the partitions the day's samples are built from."""
    h = hashlib.sha256()
    # The real-time columns also count the previous day's last hour of impressions.
    for table, d in [*((t, day) for t in SAMPLE_INPUTS), ("impressions", day - 1)]:
        path = c.lake.path(table, d)
        h.update(path.read_bytes() if d >= 0 and path.is_file() else b"missing")
    return h.hexdigest()


def _sidecar(c: Campaign, day: int) -> Path:
    return c.lake.path("samples", day).with_suffix(".inputs")


def samples_cache_key(context, parameters) -> str:
    """Make-like caching: reuse the run only while the samples on disk were built from exactly
    these inputs; a changed input or a deleted output gives a fresh key, so the task runs."""
    c, day = open_campaign(parameters["data_dir"]), parameters["day"]
    sidecar, fingerprint = _sidecar(c, day), _fingerprint(c, day)
    built_from = sidecar.read_text() if sidecar.is_file() and c.lake.has("samples", day) else ""
    return f"samples-{c.name}-{day}-{fingerprint}" if built_from == fingerprint else f"run-{uuid.uuid4().hex}"


@task(cache_key_fn=samples_cache_key, persist_result=True)
def build_samples(data_dir: str, day: int) -> int:
    """Join the day's impressions with point-in-time features into training samples (cached
    while its input partitions are unchanged)."""
    c = open_campaign(data_dir)
    fingerprint = _fingerprint(c, day)
    rows = samples.build_samples(c.lake, day)
    _sidecar(c, day).write_text(fingerprint)
    return rows


@task(**TASK)
def check_consistency(data_dir: str, day: int) -> dict[str, float]:
    """Compare the feature vectors logged online on `day` with the same rows rebuilt from its samples."""
    return consistency.check(open_campaign(data_dir).lake, day)


def staging_dir(c: Campaign, day: int) -> Path:
    return c.models_dir(day).with_name(f".staging-day={day:05d}")


@task(**TASK)
def start_training(data_dir: str, day: int) -> str:
    """Empty the staging folder that the day's models are written to."""
    c = open_campaign(data_dir)
    staging = staging_dir(c, day)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # The model set carries the experiment it was trained for: arms, quotas, model configs.
    (staging / "experiment.json").write_text(json.dumps(to_mapping(c.experiment), indent=2))
    return str(staging)


@task(**TASK)
def record_lineage(data_dir: str, day: int) -> dict:
    """Write the staged models' lineage (features, source partitions) beside them and into the lake."""
    c = open_campaign(data_dir)
    record = training.lineage(c.lake, day, c.experiment)
    (staging_dir(c, day) / "lineage.json").write_text(json.dumps(record, indent=2))
    c.lake.write("model_lineage", day, lineage.table(record))
    return record


@task(**TASK)
def publish_models(data_dir: str, day: int) -> str:
    """Swap the staged models in, so serving never loads a half-written model set."""
    c = open_campaign(data_dir)
    final, staging = c.models_dir(day), staging_dir(c, day)
    old = final.with_name(f".old-day={day:05d}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return str(final)


@task(**TASK, retries=1)
def train_channels(data_dir: str, day: int) -> dict[str, float]:
    """Fit every recall channel on logs up to `day`; saved under models/day=<day>."""
    c = open_campaign(data_dir)
    # Yesterday's published models (if any) are where warm-starting channels begin.
    previous = c.models_dir(day - 1) if day > 0 and c.models_dir(day - 1).is_dir() else None
    return training.train_channels(c.lake, day, c.experiment, staging_dir(c, day), previous)


@task(**TASK, retries=1)
def train_rankers(data_dir: str, day: int) -> dict[str, float]:
    """Fit every ranker on recent samples; report holdout AUC and logloss."""
    c = open_campaign(data_dir)
    return training.train_rankers(c.lake, day, c.experiment, staging_dir(c, day))


@task(**TASK)
def recall_day(data_dir: str, day: int) -> list[dict]:
    """Recall@K of each channel and each arm's merge against the day's clicks, replayed with the
    models and features that served the day (trained on days <= day - 1); none for day 0."""
    c = open_campaign(data_dir)
    if day == 0:
        return []
    cfg = c.experiment.recall_eval
    # The registry's pipelines, as serving loaded them: what is replayed is what served.
    return recall_eval.recall_daily(c.lake, day, tracking.load_pipelines(c, day), cfg.ks, cfg.max_users)


@task(**TASK)
def publish_summary(rows: list[dict], day: int, campaign: str, recall: list[dict] | None = None) -> str:
    """The day's A/B summary as a markdown artifact on the flow run, for the Prefect UI."""
    key = "".join(ch if ch.isalnum() else "-" for ch in f"ab-{campaign}-day-{day}".lower())
    create_markdown_artifact(markdown=report.summary_markdown(rows, day, campaign, recall), key=key[:100],
                             description=f"A/B summary of day {day}")
    return key


@task(**TASK, retries=2, retry_delay_seconds=2)
def register_models(data_dir: str, day: int, run_id: str) -> str:
    """Log the day's models to MLflow, register them and move the arms' aliases to them."""
    c = open_campaign(data_dir)
    return tracking.register_pipelines(c, run_id, day, c.models_dir(day))


@task(**TASK)
def report_day(data_dir: str, day: int) -> list[dict]:
    """Write ab_daily, latency_daily and channel_latency_daily for `day`; return the day's summary rows."""
    return report.report_day(open_campaign(data_dir), day)
