"""The data directory's lock, taking over after a dead process, and resuming a campaign."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.experiment import load_experiment
from flows import tracking
from flows.campaign_state import LOCK, CampaignBusyError, clear_data_dir, exclusive, holds_lock
from flows.cli import main
from flows.recovery import claim, recover
from sim.config import load_scenario
from story.campaign import REPORT_TABLES, create_campaign

REPO = Path(__file__).resolve().parents[2]


def _campaign(data_dir: Path):
    return create_campaign(data_dir, "t", load_scenario("tiny"), load_experiment("default"), None)


def _spawn(code: str, *args: str) -> subprocess.Popen:
    """A Python child that prints 'ready' once it has done what `code` does, then waits."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:             # MLflow may log a line or two first
        seen.append(line)
        if line.strip() == "ready":
            return proc
    raise AssertionError("".join(seen))


HOLD = """
    import sys, time
    from flows.campaign_state import exclusive
    with exclusive(sys.argv[1]):
        print("ready", flush=True)
        time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_holder_until_it_dies(tmp_path, capsys):
    proc = _spawn(HOLD, str(tmp_path))
    try:
        with pytest.raises(CampaignBusyError) as exc:
            with exclusive(tmp_path):
                pass
        msg = str(exc.value)
        assert f"{tmp_path} is in use by another reclab process (pid {proc.pid} on host " \
               f"{socket.gethostname()}, started 20" in msg
        assert "use another --data-dir" in msg
        # The command line refuses it in one line, before any orchestration starts.
        assert main(["campaign", "--scenario", "tiny", "--days", "1", "--data-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {proc.pid}" in err[0]
        assert main(["run-day", "--day", "1", "--data-dir", str(tmp_path)]) == 2
        assert f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    # Killed outright, it could not unlock: the kernel did.
    with exclusive(tmp_path) as first:
        assert first


def test_the_lock_is_reentrant_and_per_directory(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with exclusive(a) as first:
        assert first and holds_lock(a)
        with exclusive(a) as again:
            assert not again
        assert holds_lock(a)
        with exclusive(b) as other:
            assert other
    assert not holds_lock(a) and not holds_lock(b)


def test_fresh_clears_everything_but_the_lock(tmp_path):
    _campaign(tmp_path)
    (tmp_path / "lake" / "users").mkdir(parents=True)
    (tmp_path / "lake" / "users" / "day=00000.parquet").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="needs its lock"):
        clear_data_dir(tmp_path)
    with exclusive(tmp_path):
        clear_data_dir(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == [LOCK]


def test_a_fresh_start_writes_a_new_mlflow_store_after_the_lock_opened_the_old_one(tmp_path):
    # Taking the lock reads the old store (orphaned runs); MLflow caches its engine and store per
    # URI, which wrote to the deleted file ('readonly database') until clearing released them.
    c = _campaign(tmp_path)
    tracking.experiment_id(c)
    with claim(tmp_path):
        clear_data_dir(tmp_path)
        again = _campaign(tmp_path)
        new_id = tracking.experiment_id(again)
        with tracking.run(again, "after --fresh") as run_id:
            tracking.set_tags(again, run_id, {"k": "v"})
    assert MlflowClient(again.tracking_uri).get_run(run_id).data.tags["k"] == "v"
    assert MlflowClient(again.tracking_uri).get_experiment(new_id).name == again.name


def test_taking_over_marks_a_dead_process_runs_failed_and_sweeps_its_temp_files(tmp_path):
    c = _campaign(tmp_path)
    client = MlflowClient(c.tracking_uri)
    exp = tracking.experiment_id(c)
    data_dir = str(tmp_path.resolve())

    def running(name: str, process: str, where: str = data_dir) -> str:
        tags = {"reclab.data_dir": where, "reclab.process": process, "reclab.pid": "4242",
                "reclab.host": "elsewhere"}
        return client.create_run(exp, run_name=name, tags=tags).info.run_id

    dead = running("day-2/train", "a-dead-process")
    other_dir = running("day-2", "a-dead-process", where="/some/other/data")
    ours = running("ours", tracking.PROCESS)
    half = tmp_path / "lake" / "samples" / ".day=00002.parquet.9f.tmp"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"PAR1")
    staging = c.models_dir(2).with_name(".staging-day=00002")
    staging.mkdir(parents=True)

    with claim(tmp_path):
        status = {r: client.get_run(r).info.status for r in (dead, other_dir, ours)}
    assert status == {dead: "FAILED", other_dir: "RUNNING", ours: "RUNNING"}
    reason = client.get_run(dead).data.tags[tracking.FAILURE_TAG]
    assert "killed or crashed" in reason and "pid 4242 on elsewhere" in reason
    assert not half.exists() and not staging.exists()
    assert recover(tmp_path) == {"temp_files": 0, "runs": 0}


STOPPED = """
    import signal, sys, time
    from flows import tracking
    from story.campaign import open_campaign
    from flows.cli import _stop
    from flows.recovery import claim
    signal.signal(signal.SIGTERM, _stop)
    with claim(sys.argv[1]):
        c = open_campaign(sys.argv[1])
        with tracking.run(c, "day-1/train"):
            print("ready", flush=True)
            time.sleep(120)
"""


def test_sigterm_fails_the_open_run_and_frees_the_lock(tmp_path):
    c = _campaign(tmp_path)
    proc = _spawn(STOPPED, str(tmp_path))
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    client = MlflowClient(c.tracking_uri)
    (run,) = client.search_runs([tracking.experiment_id(c)])
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.FAILURE_TAG] == "Stopped: stopped by signal SIGTERM"
    with exclusive(tmp_path) as first:
        assert first


def test_a_campaign_resumes_from_its_first_incomplete_day(tmp_path):
    c = _campaign(tmp_path)
    assert c.first_incomplete_day(3) == 0

    def complete(day: int) -> None:
        for table in REPORT_TABLES:
            c.lake.path(table, day).parent.mkdir(parents=True, exist_ok=True)
            c.lake.path(table, day).write_bytes(b"")
        c.models_dir(day).mkdir(parents=True)

    complete(0)
    complete(1)
    complete(3)                          # a later day does not count while an earlier one is missing
    assert c.first_incomplete_day(3) == 2
    complete(2)
    assert c.first_incomplete_day(3) == 4 and c.first_incomplete_day(5) == 4
    c.lake.path("exposure_daily", 1).unlink()  # reported only in part (killed before its last write): runs again
    assert not c.day_complete(1) and c.first_incomplete_day(3) == 1
