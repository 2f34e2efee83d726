"""The one place that talks to MLflow: a campaign is an experiment, each flow run a run."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from flows.campaign_state import Campaign

MAX_PARAM = 6000
# Tells this process's runs from those of an earlier process with the same pid (a container's).
PROCESS = uuid.uuid4().hex
FAILURE_TAG = "reclab.failure"


def tracking_uri(campaign: Campaign) -> str:
    """MLFLOW_TRACKING_URI wins, as in every MLflow tool; else the campaign's own sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or campaign.tracking_uri


def client(campaign: Campaign) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri(campaign))


def experiment_id(campaign: Campaign) -> str:
    c = client(campaign)
    exp = c.get_experiment_by_name(campaign.name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (campaign.data_dir / "mlartifacts").resolve().as_uri()
    return c.create_experiment(campaign.name, artifact_location=artifacts)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> {'a.b.c': 'v'} so MLflow shows every resolved setting as a param."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


@contextmanager
def run(campaign: Campaign, name: str, parent_run_id: str | None = None,
        params: Mapping[str, Any] | None = None) -> Iterator[str]:
    """An MLflow run around a flow body; it ends FAILED if the body raises, FINISHED otherwise."""
    c = client(campaign)
    tags = {MLFLOW_RUN_NAME: name, "reclab.campaign": campaign.name,
            "reclab.data_dir": str(campaign.data_dir.resolve()), "reclab.process": PROCESS,
            "reclab.pid": str(os.getpid()), "reclab.host": socket.gethostname()}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    r = c.create_run(experiment_id(campaign), run_name=name, tags=tags)
    run_id = r.info.run_id
    if params:
        log_params(campaign, run_id, params)
    try:
        yield run_id
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        c.set_tag(run_id, FAILURE_TAG, reason[:MAX_PARAM])
        c.set_terminated(run_id, status="FAILED")
        raise
    c.set_terminated(run_id, status="FINISHED")


def fail_orphaned_runs(campaign: Campaign) -> list[str]:
    """Mark FAILED the runs of this data directory that a dead process left RUNNING.

    A process killed outright (SIGKILL, power cut) cannot close its own runs. Call this only
    while holding the data directory's lock: then no other live process writes runs for it, so
    a RUNNING run from another process is an orphan.
    """
    c = client(campaign)
    exp = c.get_experiment_by_name(campaign.name)
    if exp is None:
        return []
    data_dir = str(campaign.data_dir.resolve())
    runs = c.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                         run_view_type=ViewType.ACTIVE_ONLY, max_results=5000)
    failed = []
    for r in runs:
        tags = r.data.tags
        if tags.get("reclab.data_dir") != data_dir or tags.get("reclab.process") == PROCESS:
            continue
        reason = (f"killed or crashed: its process (pid {tags.get('reclab.pid', '?')} on "
                  f"{tags.get('reclab.host', '?')}) ended without closing the run; marked failed "
                  f"by pid {os.getpid()} on {socket.gethostname()} when it took over {data_dir}")
        c.set_tag(r.info.run_id, FAILURE_TAG, reason)
        c.set_terminated(r.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
        failed.append(r.info.run_id)
    return failed


def log_params(campaign: Campaign, run_id: str, params: Mapping[str, Any]) -> None:
    flat = flatten("", params)
    batch = [Param(k, v[:MAX_PARAM]) for k, v in sorted(flat.items())]
    c = client(campaign)
    for start in range(0, len(batch), 100):
        c.log_batch(run_id, params=batch[start:start + 100])


def log_metrics(campaign: Campaign, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v == v]  # drop NaN
    if batch:
        client(campaign).log_batch(run_id, metrics=batch)


def set_tags(campaign: Campaign, run_id: str, tags: Mapping[str, str]) -> None:
    client(campaign).log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_model_dir(campaign: Campaign, run_id: str, local_dir: Path, artifact_path: str) -> None:
    """Models are logged as the very files serving loads, with the config inside them."""
    client(campaign).log_artifacts(run_id, str(local_dir), artifact_path)


def log_table(campaign: Campaign, run_id: str, rows: list[dict], file_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(json.dumps(rows, indent=2, default=str))
        client(campaign).log_artifact(run_id, str(path))
