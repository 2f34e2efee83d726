"""The one place that talks to MLflow: a campaign is an experiment, each flow run a run."""
from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, redirect_stderr
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from story.campaign import Campaign

MAX_PARAM = 6000
# Tells this process's runs from those of an earlier process with the same pid (a container's).
PROCESS = uuid.uuid4().hex
FAILURE_TAG = "reclab.failure"
# The MLflow run a flow's run nests under: set by the calling flow (`nested_under`), so no flow
# needs an internal parameter for it in its Prefect form.
_PARENT: ContextVar[str | None] = ContextVar("reclab_parent_run", default=None)


@contextmanager
def nested_under(run_id: str) -> Iterator[None]:
    """Runs opened inside this block (by sub-flows called here) are children of `run_id`."""
    token = _PARENT.set(run_id)
    try:
        yield
    finally:
        _PARENT.reset(token)


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
    # A tracking server stores artifacts where it is configured to; the embedded store keeps
    # them beside the campaign's data.
    uri = tracking_uri(campaign)
    remote = uri.startswith(("http://", "https://"))
    artifacts = None if remote else (campaign.data_dir / "mlartifacts").resolve().as_uri()
    # The kind makes MLflow's UI open the experiment in its model-training view (runs, charts),
    # not the GenAI one (traces) it infers for an experiment without it.
    return c.create_experiment(campaign.name, artifact_location=artifacts,
                               tags={"mlflow.experimentKind": "custom_model_development"})


def ui_url(server: str, experiment: str | None = None) -> str:
    """A link into MLflow's UI that opens the model-training view. MLflow 3.17's UI keeps one
    workflow type per browser (GenAI by default) and lets it override the experiment's kind tag;
    only the link's `workflowType` switches it (checked in Chromium)."""
    where = f"experiments/{experiment}/runs" if experiment else "experiments"
    return f"{server.rstrip('/')}/#/{where}?workflowType=machine_learning"


def existing_experiment_id(campaign: Campaign) -> str | None:
    exp = client(campaign).get_experiment_by_name(campaign.name)
    return None if exp is None else exp.experiment_id


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> {'a.b.c': 'v'} so MLflow shows every resolved setting as a param."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


@contextmanager
def run(campaign: Campaign, name: str, params: Mapping[str, Any] | None = None) -> Iterator[str]:
    """An MLflow run around a flow body, nested under the caller's (`nested_under`); it ends
    FAILED if the body raises, FINISHED otherwise."""
    c = client(campaign)
    parent_run_id = _PARENT.get()
    tags = {MLFLOW_RUN_NAME: name, "reclab.campaign": campaign.name,
            "reclab.data_dir": str(campaign.data_dir.resolve()), "reclab.process": PROCESS,
            "reclab.pid": str(os.getpid()), "reclab.host": socket.gethostname()}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    r = c.create_run(experiment_id(campaign), run_name=name, tags=tags)
    run_id = r.info.run_id
    if params:
        log_params(campaign, run_id, params)
    monitor = _system_metrics(campaign, run_id) if "/" not in name else None
    try:
        yield run_id
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        c.set_tag(run_id, FAILURE_TAG, reason[:MAX_PARAM])
        c.set_terminated(run_id, status="FAILED")
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    c.set_terminated(run_id, status="FINISHED")


def _system_metrics(campaign: Campaign, run_id: str):
    """CPU, memory, disk and network of this process's machine as the run's system metrics
    (campaign and day runs; a stage's run is covered by its day's)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=5, tracking_uri=tracking_uri(campaign))
    monitor.start()
    return monitor


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


def log_table(campaign: Campaign, run_id: str, rows: list[dict], file_name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(json.dumps(rows, indent=2, default=str))
        client(campaign).log_artifact(run_id, str(path))


def log_lineage(campaign: Campaign, run_id: str, record: dict) -> None:
    """A model's lineage on its run: the whole record as lineage.json, the gist as tags."""
    from components.features.lineage import day_ranges

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lineage.json"
        path.write_text(json.dumps(record, indent=2))
        client(campaign).log_artifact(run_id, str(path))
    tags = {"reclab.features_version": record["features_version"],
            "reclab.features": ",".join(f["name"] for f in record["features"])[:MAX_PARAM]}
    for model, spec in record["models"].items():
        tags[f"reclab.lineage.{model}"] = "; ".join(
            f"{t} {day_ranges(d)}" for t, d in spec["sources"].items())[:MAX_PARAM]
    set_tags(campaign, run_id, tags)


def registered_name(campaign: Campaign) -> str:
    """The registry name of a campaign's pipelines: one version per training day."""
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in campaign.name)
    return f"reclab-{slug}"


def _signature(slate_size: int):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("string", "arm")]),
        outputs=Schema([TensorSpec(np.dtype(np.int64), (-1, slate_size), "items")]),
        params=ParamSchema([ParamSpec("lake", "string", ""), ParamSpec("day", "long", 0)]),
    )


@contextmanager
def _fluent(campaign: Campaign) -> Iterator[None]:
    """MLflow's fluent API (log_model, load_model) reads a process-wide URI and exports it to the
    environment; scope it to this campaign so one campaign never leaks into the next."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(campaign))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


# The libraries a logged pipeline needs, pinned to the versions that trained it. Our own code is
# not copied into each model (every shard of every day downloads the model through the tracking
# server, and the code would triple its files): a model server runs in reclab's image.
MODEL_LIBRARIES = ("mlflow", "numpy", "pandas", "pyarrow", "duckdb", "torch", "faiss-cpu", "scipy", "pyyaml")


def model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{lib}=={version(lib)}" for lib in MODEL_LIBRARIES]


def register_pipelines(campaign: Campaign, run_id: str, day: int, models_dir: Path) -> str:
    """Log the day's models as one MLflow model with a signature, register it, and point each
    arm's alias (plus `champion` for the control, `challenger` for a single treatment) at it."""
    import mlflow

    exp = campaign.experiment
    name = registered_name(campaign)
    # The registry prints each new version to stderr; a quiet command (RECLAB_QUIET) keeps its own
    # output (the CLI's progress and table) alone on the console.
    quiet = redirect_stderr(io.StringIO()) if os.environ.get("RECLAB_QUIET") == "1" else nullcontext()
    with _fluent(campaign), mlflow.start_run(run_id=run_id), quiet:
        info = mlflow.pyfunc.log_model(
            name="pipeline", python_model=str(Path(__file__).with_name("pipeline_model.py")),
            artifacts={"models": str(models_dir)}, signature=_signature(exp.slate_size),
            pip_requirements=model_requirements(), registered_model_name=name,
            tags={"reclab.day": str(day)}, await_registration_for=0,
        )
    version = str(info.registered_model_version)
    c = client(campaign)
    c.set_model_version_tag(name, version, "reclab.day", str(day))
    c.set_model_version_tag(name, version, "reclab.trained_on_days", f"<= {day}")
    treatments = [a for a in exp.arms if a != exp.control]
    aliases = [*exp.arms, "champion", *(["challenger"] if len(treatments) == 1 else [])]
    for alias in aliases:
        c.set_registered_model_alias(name, alias, version)
    return version


def load_pipelines(campaign: Campaign, day: int) -> dict:
    """Each arm's pipeline for serving `day`, from the registry: the version the arm's alias points
    at when it was trained on day - 1 (the normal daily case), else, when an older day is re-run,
    the version that was trained on day - 1, so a replay serves the models of its time."""
    import mlflow

    from components.lake import MissingPartitionError

    name, c = registered_name(campaign), client(campaign)
    versions = c.search_model_versions(f"name='{name}'")
    trained = {int(v.tags.get("reclab.day", -1)): v for v in sorted(versions, key=lambda v: int(v.version))}
    out = {}
    for arm in campaign.experiment.arms:
        current = next((v for v in versions if arm in v.aliases), None)
        if current is not None and int(current.tags.get("reclab.day", -1)) == day - 1:
            uri = f"models:/{name}@{arm}"
        elif day - 1 in trained:
            uri = f"models:/{name}/{trained[day - 1].version}"
        else:
            raise MissingPartitionError(
                f"the registry has no {name} version trained on day {day - 1} (alias {arm}: "
                f"{'version ' + current.version if current else 'unset'}); day {day} is served by the "
                f"models trained on day {day - 1}: run the days in order")
        with _fluent(campaign):
            out[arm] = mlflow.pyfunc.load_model(uri).unwrap_python_model().pipelines_[arm]
    return out
