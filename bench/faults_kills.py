"""Killed campaigns: does every resume end where an uninterrupted campaign ends?

Part (a) of the fault campaign (issue 19), run by `python -m bench.faults`. One `tiny` campaign is
run uninterrupted with Prefect's logs on (`reclab -v`), and the time of each flow and task event in
its log is kept: that log is the map of the stages (start-up, simulate, build samples, train,
report). Each kill point is drawn, from its own seeded stream, in a stage taken in turn: an event of
that stage and a fraction of the time to the next event. A fresh campaign of the same seed is then
started, killed with SIGKILL (its whole process group, Prefect's temporary server included) that
long after the event appears in its own log, and resumed with the same command. The resume must
exit 0 and leave

- every lake partition byte-identical to the uninterrupted campaign's (the measured wall-clock
  latency tables excepted, whose every run differs), no temporary file, no hidden file;
- no MLflow run RUNNING (read from the campaign's own MLflow store, sqlite).
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("start", "simulate_day", "build_samples", "train", "report")
# Wall-clock latencies: a re-run day measures them again, so they never repeat.
MEASURED = {"request_latency", "latency_daily", "request_channel_latency", "channel_latency_daily"}
_RUN = re.compile(r"(Flow run|Task run) '([^']+)' - (Beginning|Finished)")
_SUBFLOW = re.compile(r"Beginning subflow run '[^']+' for flow '([a-z_]+)'")


def event_key(line: str) -> str | None:
    """A log line's event, the same in every run of one campaign (task runs' hash suffix dropped)."""
    if "Starting temporary server" in line:
        return "prefect server"
    m = _RUN.search(line)
    if not m:
        return None
    name = re.sub(r"-[0-9a-f]{3}$", "", m.group(2)) if m.group(1) == "Task run" else m.group(2)
    return f"{m.group(1).lower()} {name} {m.group(3).lower()}"


@dataclass(frozen=True)
class Event:
    key: str        # event_key, with its occurrence number when it repeats
    stage: str      # the stage running when it happened
    at: float       # seconds after the command started


def timeline(lines: list[tuple[float, str]]) -> list[Event]:
    """The events of one run's log, each with its stage; the command's launch is the first."""
    out, seen, stage = [Event("launch", "start", 0.0)], {}, "start"
    for at, line in lines:
        if (m := _SUBFLOW.search(line)) and m.group(1) in STAGES:
            stage = m.group(1)
        if (key := event_key(line)) is None:
            continue
        seen[key] = seen.get(key, 0) + 1
        out.append(Event(f"{key} #{seen[key]}", stage, at))
    return out


@dataclass(frozen=True)
class Kill:
    index: int
    stage: str
    after: str          # the event that arms the kill
    delay: float        # seconds after that event


def plan(seed: int, n: int, events: list[Event]) -> list[Kill]:
    """N kill points, each from its own seeded stream; stage i % 5 for the i-th, so all are hit."""
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}-kill-{i}")
        stage = STAGES[i % len(STAGES)]
        choices = [j for j, e in enumerate(events[:-1]) if e.stage == stage]
        j = rng.choice(choices)
        out.append(Kill(i, stage, events[j].key, round(rng.random() * (events[j + 1].at - events[j].at), 3)))
    return out


class Logged:
    """A `reclab -v` command in its own process group, its log lines timed as they arrive."""

    def __init__(self, argv: list[str], env: dict, cwd: Path):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.seen: dict[str, int] = {"launch": 1}
        self.armed = threading.Event()
        self.target = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))
            if (key := event_key(line)) is not None:
                self.seen[key] = self.seen.get(key, 0) + 1
                if f"{key} #{self.seen[key]}" == self.target:
                    self.armed.set()

    def kill_after(self, event: str, delay: float, timeout: float) -> bool:
        """SIGKILL the process group `delay` s after `event`; False if the command ended first."""
        self.target = event
        if event == "launch":
            self.armed.set()
        end = time.monotonic() + timeout
        while not self.armed.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > end:
                return False
        time.sleep(delay)
        if self.proc.poll() is not None:
            return False
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)
        self.reader.join(10)
        return True

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code


def partitions(data_dir: Path) -> dict[str, bytes]:
    lake = data_dir / "lake"
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("day=*.parquet"))}


def runs_by_status(data_dir: Path) -> dict[str, int]:
    """MLflow runs of the campaign's own store by status (read-only, straight from its sqlite file)."""
    db = data_dir / "mlflow.db"
    if not db.is_file():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())


@dataclass
class Trial:
    index: int
    stage: str
    after: str
    delay: float
    killed: bool = False
    killed_at: float = 0.0              # seconds after launch
    resume_code: int | None = None
    identical: bool = False
    differ: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)
    resume_seconds: float = 0.0
    error: str = ""


def first_incomplete(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    """Partitions that differ, are missing or are extra, the measured latencies excepted."""
    keys = set(got) | set(want)
    return sorted(k for k in keys if k.split("/")[0] not in MEASURED and got.get(k) != want.get(k))[:20] + \
        sorted(k for k in keys if k.split("/")[0] in MEASURED and (k in got) != (k in want))


def run_kills(n: int, seed: int, campaign: list[str], work: Path, env: dict, repo: Path,
              timeout: float, log=print) -> tuple[list[Trial], list[Event], float]:
    """The uninterrupted campaign, then N killed-and-resumed ones; returns the trials, the map of
    stages and the uninterrupted campaign's seconds."""
    reclab = [sys.executable, "-m", "flows"]
    reference = work / "uninterrupted"
    shutil.rmtree(reference, ignore_errors=True)
    ref = Logged([*reclab, "-v", *campaign, "--data-dir", str(reference)], env, repo)
    if ref.wait(timeout) != 0:
        sys.exit("the uninterrupted campaign failed:\n" + "\n".join(l for _, l in ref.lines[-40:]))
    seconds = ref.lines[-1][0] if ref.lines else 0.0
    events = timeline(ref.lines)
    want = partitions(reference)
    trials = []
    trial_dir = work / "killed"
    for k in plan(seed, n, events):
        t = Trial(k.index, k.stage, k.after, k.delay)
        shutil.rmtree(trial_dir, ignore_errors=True)
        run = Logged([*reclab, "-v", *campaign, "--data-dir", str(trial_dir)], env, repo)
        try:
            t.killed = run.kill_after(k.after, k.delay, timeout)
            t.killed_at = round(time.monotonic() - run.start, 2)
            if not t.killed:
                if run.proc.poll() is None:
                    os.killpg(run.proc.pid, signal.SIGKILL)
                t.error = f"the campaign ended (rc {run.proc.wait(60)}) before the kill point"
            else:
                begun = time.monotonic()
                resume = subprocess.run([*reclab, *campaign, "--data-dir", str(trial_dir)], cwd=repo, env=env,
                                        capture_output=True, text=True, timeout=timeout)
                t.resume_seconds = round(time.monotonic() - begun, 1)
                t.resume_code = resume.returncode
                if resume.returncode != 0:
                    t.error = (resume.stderr.strip().splitlines() or ["(no output)"])[-1]
                t.differ = first_incomplete(partitions(trial_dir), want)
                t.leftovers = sorted(str(p.relative_to(trial_dir)) for p in trial_dir.rglob(".*"))
                t.runs = runs_by_status(trial_dir)
                t.identical = (resume.returncode == 0 and not t.differ and not t.leftovers
                               and not t.runs.get("RUNNING"))
        except subprocess.TimeoutExpired:
            t.error = f"no answer within {timeout:.0f} s"
        finally:
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)
        trials.append(t)
        log(f"kill {t.index} in {t.stage} ({t.after} + {t.delay:.2f} s, at {t.killed_at:.1f} s) -> "
            + ("identical" if t.identical else f"NOT identical: {t.error} differ {t.differ[:5]} "
                                                f"leftovers {t.leftovers[:5]} runs {t.runs}"))
    return trials, events, seconds
