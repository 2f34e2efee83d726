"""Damaged lakes: does every user command answer a broken partition with one clear line?

Part (b) of the fault campaign (issue 19); part (a), SIGKILLs and resumes, is bench/faults_kills.py.
One `tiny` campaign is run, then N seeded damages are made to random partitions of random tables of
a copy of its data directory: truncate the file,
zero a span, flip bytes, delete it, or rewrite it with another schema. On a fresh damaged copy
each, `reclab report`, `reclab run-day --day D` (D: the damaged partition's day, the command that
rebuilds it) and a resumed `reclab campaign` are run as a user runs them, in a subprocess. Each must

- answer with one line (`reclab: error: ...`) that names the damaged file and its rebuild
  (`reclab run-day --day D`), exit non-zero and print no traceback, or
- succeed where that is right: the report when its table is exactly the undamaged one (it does not
  read what was lost), run-day and campaign when they rebuilt the partition byte for byte;

and leave every other partition as it was (a command that re-ran days may rewrite their measured
latency tables only). Writes bench/faults.json and a section of bench/RESULTS.md.

    python -m bench.faults [--kills 20] [--damages 50] [--seed 19]   (0 kills or damages: keep that part)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.results import append, conditions, conditions_note

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "faults.json"
KINDS = ("truncate", "zero", "flip", "delete", "schema")
# Wall-clock latencies: a re-run day measures them again, so they never repeat.
MEASURED = {"request_latency", "latency_daily", "request_channel_latency", "channel_latency_daily"}
CAMPAIGN = ["--scenario", "tiny", "--experiment", "default"]


def reclab(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def partitions(data_dir: Path) -> dict[str, bytes]:
    lake = data_dir / "lake"
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("day=*.parquet"))}


@dataclass(frozen=True)
class Damage:
    index: int
    kind: str
    partition: str          # <table>/day=<d>.parquet, relative to the lake
    detail: str

    @property
    def table(self) -> str:
        return self.partition.split("/")[0]

    @property
    def day(self) -> int:
        return int(self.partition.split("=")[1].split(".")[0])


def plan(seed: int, n: int, pristine: dict[str, bytes]) -> list[Damage]:
    """N damages, each drawn from its own seeded stream: the same seed gives the same campaign."""
    names = sorted(pristine)
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}-{i}")
        part, kind = rng.choice(names), rng.choice(KINDS)
        size = len(pristine[part])
        if kind == "truncate":
            detail = f"keep {rng.randrange(0, size)} of {size} bytes"
        elif kind == "zero":
            length = rng.randint(16, 256)
            detail = f"zero {length} bytes at {rng.randrange(0, max(1, size - length))}"
        elif kind == "flip":
            detail = "flip " + ",".join(str(rng.randrange(0, size)) for _ in range(rng.randint(1, 8)))
        elif kind == "schema":
            detail = rng.choice(["drop-column", "rename-column", "retype-column"])
        else:
            detail = "delete"
        out.append(Damage(i, kind, part, detail))
    return out


def apply(damage: Damage, lake: Path) -> None:
    path = lake / damage.partition
    data = bytearray(path.read_bytes())
    words = damage.detail.split()
    if damage.kind == "truncate":
        path.write_bytes(bytes(data[: int(words[1])]))
    elif damage.kind == "zero":
        start, length = int(words[-1]), int(words[1])
        data[start:start + length] = bytes(len(data[start:start + length]))
        path.write_bytes(bytes(data))
    elif damage.kind == "flip":
        for offset in map(int, words[1].split(",")):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage.kind == "delete":
        path.unlink()
    else:
        # Another reclab's columns under this version's tag: the lake must not read it as ours.
        table = pq.read_table(path)
        meta = table.schema.metadata
        last = table.column_names[-1]
        if damage.detail == "drop-column":
            table = table.drop_columns([last])
        elif damage.detail == "rename-column":
            table = table.rename_columns([*table.column_names[:-1], f"{last}_v0"])
        else:
            table = table.set_column(len(table.column_names) - 1, last,
                                     pa.array([str(v) for v in table.column(last).to_pylist()], pa.string()))
        pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


@dataclass
class Outcome:
    command: str
    code: int
    verdict: str            # clear | rebuilt | unaffected | traceback | unclear
    line: str = ""
    touched: list[str] = field(default_factory=list)


def judge(name: str, proc: subprocess.CompletedProcess, damage: Damage, data_dir: Path,
          pristine: dict[str, bytes], report_out: str) -> Outcome:
    out = proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.strip()]
    after = partitions(data_dir)
    # Every partition but the damaged one as it was; the days a command re-ran (run-day: its day,
    # a resumed campaign: from the damaged day on) may differ in their measured latencies only.
    def remeasured(key: str) -> bool:
        day = int(key.split("=")[1].split(".")[0])
        rerun = {"report": False, "run-day": day == damage.day}.get(name, day >= damage.day)
        return key.split("/")[0] in MEASURED and rerun

    touched = sorted(k for k, v in pristine.items() if k != damage.partition and after.get(k) != v
                     and not remeasured(k))
    touched += sorted(k for k in after if k not in pristine)
    line = errors[-1] if errors else ""
    if "Traceback (most recent call last)" in out:
        return Outcome(name, proc.returncode, "traceback", line, touched)
    if proc.returncode != 0:
        path = str((data_dir / "lake" / damage.partition).resolve())
        clear = (len(errors) == 1 and line.startswith("reclab: error:") and path in line
                 and f"reclab run-day --day {damage.day}" in line)
        return Outcome(name, proc.returncode, "clear" if clear else "unclear", line, touched)
    if name == "report":
        return Outcome(name, 0, "unaffected" if proc.stdout == report_out else "unclear", line, touched)
    if damage.table in MEASURED:    # measured again: whole and of the contract is all one can ask
        rebuilt = damage.partition in after and _whole(damage.table, data_dir / "lake" / damage.partition)
    else:
        rebuilt = after.get(damage.partition) == pristine[damage.partition]
    return Outcome(name, 0, "rebuilt" if rebuilt else "unclear", line, touched)


def _whole(table: str, path: Path) -> bool:
    from components.lake import Lake, LakeError

    try:
        Lake(path.parent.parent).read(table, int(path.name.split("=")[1].split(".")[0]))
    except LakeError:
        return False
    return True


def damages_part(args: argparse.Namespace, work: Path, env: dict) -> dict:
    """Part (b): run the damages, append their RESULTS section; returns their part of faults.json."""
    load_before = os.getloadavg()
    # The campaign is made, and every damaged copy runs, at one path: the manifest records it.
    trial, base = work / "campaign", work / "base"
    start = time.perf_counter()
    if not base.is_dir():
        made = reclab(["campaign", *CAMPAIGN, "--days", str(args.days), "--data-dir", str(trial), "--fresh"],
                      env, args.timeout)
        if made.returncode != 0:
            sys.exit(f"the campaign to damage failed:\n{made.stderr[-3000:]}")
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(trial, base)
    pristine = partitions(base)
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(base, trial)
    report_out = reclab(["report", "--data-dir", str(trial)], env, args.timeout).stdout
    commands = {"report": lambda d: ["report", "--data-dir", str(trial)],
                "run-day": lambda d: ["run-day", "--day", str(d.day), "--data-dir", str(trial)],
                "campaign": lambda d: ["campaign", *CAMPAIGN, "--days", str(args.days), "--data-dir", str(trial)]}
    results = []
    for damage in plan(args.seed, args.damages, pristine):
        outcomes = []
        for name, argv in commands.items():
            shutil.rmtree(trial)
            shutil.copytree(base, trial)
            apply(damage, trial / "lake")
            try:
                proc = reclab(argv(damage), env, args.timeout)
            except subprocess.TimeoutExpired:
                outcomes.append(Outcome(name, -1, "unclear", f"no answer within {args.timeout:.0f} s"))
                continue
            outcomes.append(judge(name, proc, damage, trial, pristine, report_out))
        results.append((damage, outcomes))
        print(damage.index, damage.kind, damage.partition, damage.detail, "->",
              ", ".join(f"{o.command} {o.verdict}" + (f" (touched {o.touched})" if o.touched else "")
                        for o in outcomes), flush=True)
    seconds = time.perf_counter() - start
    machine = conditions(load_before)
    good = {"clear", "rebuilt", "unaffected"}
    passed = [d for d, outs in results if all(o.verdict in good and not o.touched for o in outs)]
    summary = {"tried": len(results), "clear_errors": len(passed),
               "tracebacks": sum(any(o.verdict == "traceback" for o in outs) for _, outs in results),
               "unclear": sum(any(o.verdict == "unclear" for o in outs) for _, outs in results),
               "touched_other_partitions": sum(any(o.touched for o in outs) for _, outs in results)}
    by_command = {name: {v: sum(o.command == name and o.verdict == v for _, outs in results for o in outs)
                         for v in ("clear", "rebuilt", "unaffected", "traceback", "unclear")}
                  for name in commands}
    kinds = sorted({d.kind for d, _ in results})
    rows = [[kind, sum(d.kind == kind for d, _ in results),
             sum(d.kind == kind for d in passed),
             sum(d.kind == kind and any(o.verdict == "traceback" for o in outs) for d, outs in results)]
            for kind in kinds]
    rows.append(["all", summary["tried"], summary["clear_errors"], summary["tracebacks"]])
    append(f"Damaged lakes: {summary['clear_errors']} of {summary['tried']} damages answered clearly by "
           f"report, run-day and a resumed campaign", ["damage", "tried", "answered clearly", "with a traceback"],
           rows, notes=(
               f"seed {args.seed}; `tiny` campaign of {args.days} A/B days; a fresh damaged copy per command; "
               f"answered clearly: each command either exits non-zero with one line naming the file and "
               f"`reclab run-day --day N`, or succeeds rightly (report identical to the undamaged one; "
               f"run-day or campaign rebuilt the partition byte for byte), no other partition changed. Per "
               f"command: " + "; ".join(f"{n} " + ", ".join(f"{v} {c}" for v, c in by.items() if c)
                                        for n, by in by_command.items())
               + f". {seconds / 60:.1f} min; {conditions_note(machine)}; bench/faults.json has every trial"))
    return {"summary": summary, "run": {
        "by_command": by_command, "seed": args.seed, "campaign_days": args.days, "date": _now(),
        "seconds": round(seconds, 1), **machine,
        "trials": [{"index": d.index, "kind": d.kind, "partition": d.partition, "detail": d.detail,
                    "outcomes": [o.__dict__ for o in outs]} for d, outs in results]}}


def kills_part(args: argparse.Namespace, work: Path, env: dict) -> dict:
    """Part (a): kill and resume, append its RESULTS section; returns its part of faults.json."""
    from bench.faults_kills import STAGES, run_kills

    load_before = os.getloadavg()
    start = time.perf_counter()
    campaign = ["campaign", *CAMPAIGN, "--days", str(args.kill_days)]
    trials, events, reference_s = run_kills(args.kills, args.seed, campaign, work, env, REPO, args.timeout,
                                            log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    machine = conditions(load_before)
    summary = {"tried": len(trials), "identical": sum(t.identical for t in trials),
               "killed": sum(t.killed for t in trials),
               "left_running": sum(bool(t.runs.get("RUNNING")) for t in trials)}
    rows = [[stage, sum(t.stage == stage for t in trials), sum(t.stage == stage and t.identical for t in trials),
             ", ".join(sorted({t.after.rsplit(" #", 1)[0] for t in trials if t.stage == stage}))]
            for stage in STAGES]
    rows.append(["all", summary["tried"], summary["identical"], ""])
    append(f"Killed campaigns: {summary['identical']} of {summary['tried']} SIGKILLs resumed to a byte-identical lake",
           ["stage killed in", "kills", "resumed identical", "kill armed after"], rows, notes=(
               f"seed {args.seed}; `tiny` campaign of {args.kill_days} A/B day (uninterrupted: "
               f"{reference_s:.0f} s with start-up); each kill: a fresh campaign, SIGKILL to its process group "
               f"a seeded delay after a seeded event of the stage (from the uninterrupted run's log), then the "
               f"same command again; identical: it exits 0, every partition but the measured latencies is "
               f"byte for byte the uninterrupted campaign's, no temporary or hidden file, no MLflow run RUNNING "
               f"({summary['killed']} of {summary['tried']} killed before they ended; {summary['left_running']} "
               f"left a run RUNNING). {seconds / 60:.1f} min; {conditions_note(machine)}; "
               f"bench/faults.json has every kill"))
    return {"summary": summary, "run": {
        "seed": args.seed, "campaign_days": args.kill_days, "date": _now(), "seconds": round(seconds, 1),
        "uninterrupted_seconds": round(reference_s, 1), **machine,
        "stages": [e.__dict__ for e in events], "trials": [t.__dict__ for t in trials]}}


def _now() -> str:
    import datetime as dt

    return f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"


def _kept(name: str) -> dict:
    """A part not re-run this time, as the last run wrote it (which says when and how it ran)."""
    old = json.loads(OUT.read_text()) if OUT.is_file() else {}
    if name not in old:
        return {}
    if f"{name}_run" in old:
        return {"summary": old[name], "run": old[f"{name}_run"]}
    # The file's first layout held the damages only, their run's fields beside them.
    return {"summary": old[name], "run": {k: v for k, v in old.items() if k != name}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--damages", type=int, default=50, help="damages to try (0: keep the last run's)")
    p.add_argument("--kills", type=int, default=20, help="kills to try (0: keep the last run's)")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--days", type=int, default=2, help="A/B days of the campaign that is damaged")
    p.add_argument("--kill-days", type=int, default=1, help="A/B days of the campaign that is killed")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per command")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reclab-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    # A Prefect home of its own: the ephemeral servers of these runs share nothing with others'.
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    parts = {"kills": kills_part(args, work, env) if args.kills else _kept("kills"),
             "damages": damages_part(args, work, env) if args.damages else _kept("damages")}
    out = {name: part["summary"] for name, part in parts.items() if part}
    out.update({f"{name}_run": part["run"] for name, part in parts.items() if part})
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({name: part["summary"] for name, part in parts.items() if part}))


if __name__ == "__main__":
    main()
