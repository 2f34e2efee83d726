"""A campaign killed mid-day resumes from the last complete day, as if it had never been killed.

One campaign runs in a subprocess and is killed (SIGKILL, its whole process group) at a random,
seeded point of a day's flow, while a second campaign with the same settings runs in this process
on another data directory. Then the killed one is run again and must end byte-identical to the
one that was never interrupted, with its killed MLflow runs marked FAILED.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from components.lake import Lake
from flows.campaign_state import CampaignBusyError, exclusive
from story.campaign import open_campaign
from flows.cli import main

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DAYS = 1
ARGS = ["campaign", "--scenario", "tiny", "--experiment", "default", "--days", str(DAYS)]
MEASURED = {"request_latency", "latency_daily", "request_channel_latency", "channel_latency_daily"}      # wall-clock time: never repeats
KILL_SEED = 8


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> float:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the campaign exited (rc {proc.returncode}) before {path} appeared")
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)
    return time.monotonic()


class Killer(threading.Thread):
    """Waits for day 1 to start, checks the lock refuses a second writer, kills at a random point."""

    def __init__(self, proc: subprocess.Popen, data_dir: Path):
        super().__init__(daemon=True)
        self.proc, self.data_dir = proc, data_dir
        self.error: BaseException | None = None
        self.refusal = ""
        self.delay = 0.0

    def run(self) -> None:
        try:
            lake = self.data_dir / "lake"
            day0 = _wait_for(lake / "items" / "day=00000.parquet", self.proc, 600)
            day1 = _wait_for(lake / "items" / "day=00001.parquet", self.proc, 600)
            try:
                with exclusive(self.data_dir):
                    pass
            except CampaignBusyError as exc:
                self.refusal = str(exc)
            # Somewhere inside day 1, which outlasts day 0: it serves through the ranker, day 0 does not.
            self.delay = random.Random(KILL_SEED).uniform(0.05, 0.95) * (day1 - day0)
            time.sleep(self.delay)
            assert self.proc.poll() is None, "the campaign finished before it could be killed"
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(60)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _first_difference(got: Path, want: Path) -> str:
    """Where two partitions' rows differ, exactly (no tolerance), or what else differs."""
    a, b = pq.read_table(got), pq.read_table(want)
    name = "/".join(got.parts[-2:])
    if a.schema != b.schema:
        return f"{name}: schema {a.schema} != {b.schema}"
    if a.num_rows != b.num_rows:
        return f"{name}: {a.num_rows} rows after the resume, {b.num_rows} uninterrupted"
    for column in a.column_names:
        x, y = a.column(column).to_pylist(), b.column(column).to_pylist()
        for row, (u, v) in enumerate(zip(x, y)):
            if u != v:
                return f"{name}: column {column} row {row}: {u!r} after the resume, {v!r} uninterrupted"
    return f"{name}: same rows, other bytes (metadata or encoding)"


def _partitions(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "lake").rglob("day=*.parquet"))}


@dataclass
class Scene:
    killed: Path
    clean: Path
    pid: int
    refusal: str


@pytest.fixture(scope="module")
def scene(prefect_server, tmp_path_factory) -> Scene:
    """A campaign killed mid-day in a subprocess, and the same campaign run meanwhile in this one."""
    tmp_path = tmp_path_factory.mktemp("faults")
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "ERROR"}
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows", *ARGS, "--data-dir", str(killed)],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    killer = Killer(proc, killed)
    killer.start()
    try:
        # Meanwhile, the same campaign on another data dir, in this process: no interference.
        assert main([*ARGS, "--data-dir", str(clean)]) == 0
        killer.join(900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if killer.error is not None:
        raise killer.error
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    return Scene(killed, clean, proc.pid, killer.refusal)


def test_the_lock_named_the_holder_while_it_ran(scene):
    assert f"pid {scene.pid} on host" in scene.refusal and "use another --data-dir" in scene.refusal


def test_killed_campaign_resumes_byte_identical_and_its_runs_fail(scene, capsys):
    killed, clean = scene.killed, scene.clean

    # Killed: what readers see is whole partitions only, each readable.
    lake = Lake(killed / "lake")
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM requests WHERE day = 0").fetchall()[0][0] > 0
    c = open_campaign(killed)
    assert c.day_complete(0) and not c.day_complete(DAYS)
    resume_from = c.first_incomplete_day(DAYS)
    kept = {k: v for k, v in _partitions(killed).items() if "day=00000" in k}

    capsys.readouterr()
    assert main([*ARGS, "--data-dir", str(killed)]) == 0
    out = capsys.readouterr().out
    assert f"resuming from day {resume_from}" in out

    # Nothing partial, nothing twice, nothing hidden left behind; day 0 was kept as it was.
    assert lake.temp_files() == []
    assert not [p for p in killed.rglob(".*")]
    for table in ("requests", "impressions", "samples", "ab_daily", "world_daily"):
        assert lake.days(table) == list(range(DAYS + 1)), table
    after = _partitions(killed)
    assert {k: after[k] for k in kept} == kept
    # ... and the resumed campaign is byte for byte the one that was never interrupted.
    reference = _partitions(clean)
    assert after.keys() == reference.keys()
    differ = sorted(k for k in after if after[k] != reference[k] and k.split("/")[1] not in MEASURED)
    # A re-run day is promised byte for byte, the world's figures included: where bytes differ,
    # name the first column and row that do, so a failure says what drifted.
    assert [_first_difference(killed / k, clean / k) for k in differ] == []

    client = MlflowClient(c.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(c.name).experiment_id], max_results=500)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert {"campaign", f"day-{resume_from}"} <= {r.info.run_name for r in failed}
    for r in failed:
        assert r.data.tags["reclab.pid"] == str(scene.pid)
        assert "killed or crashed" in r.data.tags["reclab.failure"]
    last = max((r for r in runs if r.info.run_name == "campaign"), key=lambda r: r.info.start_time)
    assert last.info.status == "FINISHED"
    assert last.data.tags["reclab.first_day_run"] == str(resume_from)
    # The resumed campaign run has every day's metrics, the kept days' read from the lake.
    history = client.get_metric_history(last.info.run_id, "control.ctr")
    assert sorted(m.step for m in history) == list(range(1, DAYS + 1))


def test_the_dashboard_never_writes_to_the_data_dir(scene, monkeypatch):
    from streamlit.testing.v1 import AppTest

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in scene.clean.rglob("*") if p.is_file()}

    before = snapshot()
    monkeypatch.setenv("RECLAB_DATA_DIR", str(scene.clean))
    at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert at.dataframe and set(at.dataframe[0].value["arm"]) == {"control", "treatment"}
    assert snapshot() == before
