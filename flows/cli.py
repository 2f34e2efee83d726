"""The `reclab` command: run campaigns and days, print reports, open the dashboard and MLflow."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from common.typedconf import ConfigError

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


def _quiet_environment(verbose: bool) -> None:
    """Defaults for an offline machine; must run before Prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if not verbose:
        os.environ.setdefault("RECLAB_QUIET", "1")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import warnings

        warnings.filterwarnings("ignore")   # libraries' deprecation and setup notes; -v shows them
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        # MLflow sets its loggers' level from this when it is imported (a level set before is lost).
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        import logging

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)


class _RunFailuresOffConsole:
    """Drops the console copy of a Prefect run's failure (an ERROR of its run loggers, traceback
    included): every failure of a run reaches `main` as an exception, which prints it once, as one
    line for a known error and a traceback for a bug. The Prefect API still gets the run's logs."""

    def filter(self, record: object) -> bool:
        import logging

        name, level = getattr(record, "name", ""), getattr(record, "levelno", 0)
        return not (level >= logging.ERROR and name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def _quiet_run_failures(verbose: bool) -> None:
    """Called once Prefect is imported: its import installs the console handler filtered here."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _RunFailuresOffConsole) for f in handler.filters):
            handler.addFilter(_RunFailuresOffConsole())


class RichReporter:
    """Overall progress across the campaign's stages, plus a bar for each long step."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        self.overall = None

    def __enter__(self) -> "RichReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.overall is not None:
            self.progress.update(self.overall, description="campaign done")
        self.progress.stop()

    def start(self, total: int, text: str) -> None:
        self.overall = self.progress.add_task(text, total=total)

    def stage(self, text: str) -> None:
        if self.overall is not None:
            task = self.progress.tasks[self.overall]
            self.progress.update(self.overall, description=text, completed=task.completed + 1)

    def track(self, items: Iterable[T], total: int, text: str) -> Iterator[T]:
        task = self.progress.add_task(f"  {text}", total=total)
        for item in items:
            yield item
            self.progress.advance(task)
        self.progress.remove_task(task)


def print_summary(data_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.lake import Lake
    from components.reports import normalised, summary_rows

    rows = summary_rows(Lake(data_dir / "lake"))
    table = Table(title=f"CTR and latency per arm per day ({data_dir})")
    for col in ("day", "arm", "requests", "CTR", "95% CI", "lift", "p", "E[CTR]", "oracle", "random",
                "norm", "p50 ms", "p99 ms", "new clicks", "items shown", "personalised"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        lift = "" if r["lift"] is None else f"{r['lift']:+.1%}"
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        table.add_row(str(r["day"]), r["arm"], str(r["requests"]),
                      f"{r['ctr']:.4f}", f"[{r['ctr_ci_low']:.4f}, {r['ctr_ci_high']:.4f}]", lift, p,
                      f"{r['ctr_expected']:.4f}", f"{r['ctr_oracle']:.4f}", f"{r['ctr_random']:.4f}",
                      f"{normalised(r['ctr_expected'], r['ctr_random'], r['ctr_oracle']):.2f}",
                      f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                      "" if r["new_click_share"] is None else f"{r['new_click_share']:.1%}",
                      "" if r.get("items_shown") is None else str(r["items_shown"]),
                      "" if r.get("personalised_share") is None else f"{r['personalised_share']:.1%}")
    console = Console()
    console.width = max(console.width, 200)   # every column whole in logs and narrow terminals
    console.print(table)
    console.print("E[CTR]: the world's expected CTR of the served slates; norm: E[CTR] placed between "
                  "random (0) and oracle (1); latency: wall clock per request, whole pipeline; new clicks: "
                  "share of clicks on items that arrived that day; items shown: distinct items in the arm's "
                  "slates; personalised: share of impressions outside the day's most shown items.")


def _next_steps(data_dir: Path, experiment: str | None = None) -> str:
    from flows.tracking import ui_url

    db = (data_dir / "mlflow.db").resolve()
    return (f"Open the dashboard:  .venv/bin/reclab dashboard --data-dir {data_dir}\n"
            f"Open MLflow:         .venv/bin/mlflow ui --backend-store-uri sqlite:///{db} --host 127.0.0.1 --port 5000\n"
            f"                     then {ui_url('http://127.0.0.1:5000', experiment)}")


def _experiment_of(data_dir: Path) -> str | None:
    """The campaign's MLflow experiment id, for a link straight to its runs; None if unknown."""
    from flows.tracking import existing_experiment_id
    from story.campaign import open_campaign

    try:
        return existing_experiment_id(open_campaign(data_dir))
    except Exception:   # a link is a convenience: never fail a finished campaign over it
        return None


def cmd_campaign(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from components.experiment import load_experiment
    from sim.config import load_scenario

    # Fail on a bad config before the orchestrator starts, with just the one-line message.
    world = load_scenario(args.scenario)
    exp = load_experiment(args.experiment)
    if args.seed is not None:
        world = replace(world, seed=args.seed)
    if args.days < 1:
        raise ConfigError(f"--days: a campaign needs at least 1 A/B day after the bootstrap, got {args.days}")
    shards = args.shards or ((os.cpu_count() or 1) if args.scale == "dask" else 1)
    from flows.scale import check

    check(args.scale, shards)
    data_dir = Path(args.data_dir)
    from flows.campaign_state import clear_data_dir
    from story.campaign import MANIFEST, open_campaign
    from flows.recovery import claim

    # The lock is taken here, before Prefect starts, so a busy data dir is refused at once.
    with claim(data_dir):
        if args.fresh:
            clear_data_dir(data_dir)
        if (data_dir / MANIFEST).is_file() and not args.rerun:
            c = open_campaign(data_dir)
            first = c.first_incomplete_day(args.days)
            if first > 0 and (c.scenario, c.experiment) == (world, exp):
                # A kept day is not run again, so a partition it lost would stay lost (or be read
                # as no rows by the days after it): refuse, naming it, before anything runs.
                c.lake.require_whole_days(range(min(first, args.days + 1)))
                kept = "day 0" if first == 1 else f"days 0-{min(first, args.days + 1) - 1}"
                todo = "nothing left to run" if first > args.days else f"resuming from day {first}"
                print(f"{data_dir}: {kept} complete and kept, {todo} (--rerun runs every day again)")
        from flows.campaign import campaign
        from flows import progress
        from flows.params import is_preset

        _quiet_run_failures(args.verbose)
        start = time.perf_counter()
        with RichReporter() as reporter:
            progress.install(reporter)
            try:
                # A YAML path is no preset of the form's dropdown: checked above, passed as it is.
                presets = is_preset("scenarios", args.scenario) and is_preset("experiments", args.experiment)
                run = campaign if presets else campaign.with_options(validate_parameters=False)
                run(scenario=args.scenario, experiment=args.experiment, days=args.days,
                         data_dir=str(data_dir), seed=args.seed, name=args.name, rerun=args.rerun,
                         scale=args.scale, shards=shards, dask_address=args.dask_address)
            finally:
                progress.install(None)
    print_summary(data_dir)
    print(f"campaign took {time.perf_counter() - start:.1f} s")
    print(_next_steps(data_dir, _experiment_of(data_dir)))
    return 0


def cmd_run_day(args: argparse.Namespace) -> int:
    from flows.recovery import claim
    from story.campaign import open_campaign
    from story.models import require_models

    with claim(args.data_dir):
        if args.day > 0:    # day 0's models are the bootstrap's, trained again with the day
            require_models(open_campaign(args.data_dir), args.day)
        from flows.campaign import daily

        _quiet_run_failures(args.verbose)
        daily(data_dir=args.data_dir, day=args.day)
    print_summary(Path(args.data_dir))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print_summary(Path(args.data_dir))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    app = REPO / "dashboards" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address,
           "--server.port", str(args.port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--", "--data-dir", str(Path(args.data_dir).resolve())]
    return subprocess.call(cmd)


def _stack_config(args: argparse.Namespace):
    from flows.stack import StackConfig

    env = os.environ
    return StackConfig(data_dir=Path(args.data_dir), state_dir=Path(args.state_dir), host=args.host,
                       prefect_port=int(env.get("RECLAB_PREFECT_PORT", 4200)),
                       mlflow_port=int(env.get("RECLAB_MLFLOW_PORT", 5000)),
                       dashboard_port=int(env.get("RECLAB_DASHBOARD_PORT", 8501)), team=args.team,
                       postgres_port=int(env.get("RECLAB_PG_PORT", 5432)),
                       dask_port=int(env.get("RECLAB_DASK_PORT", 8786)),
                       dask_dashboard_port=int(env.get("RECLAB_DASK_DASHBOARD_PORT", 8787)),
                       dask_workers=args.dask_workers)


def cmd_up(args: argparse.Namespace) -> int:
    from flows.stack import up
    from flows.tracking import ui_url

    cfg = _stack_config(args)
    what = ("PostgreSQL, Prefect server and worker, MLflow server, Dask scheduler and workers, dashboard"
            if cfg.team else "Prefect server, flow deployments, MLflow server and dashboard")
    print(f"starting {what} (a minute or two)...")
    record = up(cfg)
    print(f"Prefect UI:  http://{cfg.host}:{cfg.prefect_port}   (Deployments -> campaign -> Run)")
    print(f"MLflow UI:   {ui_url(cfg.mlflow_uri)}")
    print(f"Dashboard:   {cfg.dashboard_url}")
    if cfg.team:
        from flows.team import credentials_file

        print(f"Dask:        {cfg.dask_address} (dashboard http://{cfg.host}:{cfg.dask_dashboard_port})")
        print(f"credentials: {credentials_file(cfg.state_dir)} (Prefect: PREFECT_SERVER_API_AUTH_STRING, "
              f"MLflow: MLFLOW_TRACKING_USERNAME/PASSWORD)")
    print(f"logs and pids in {cfg.state_dir}/ ({', '.join(record['pids'])}); stop with `reclab down`")
    print(f"To run flows from a shell against it: export PREFECT_API_URL={cfg.prefect_api} "
          f"MLFLOW_TRACKING_URI={cfg.mlflow_uri}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from flows.stack import down

    stopped = down(Path(args.state_dir))
    print(f"stopped: {', '.join(stopped)}" if stopped else f"no stack recorded in {args.state_dir}")
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default shown, the example kept on one line."""


EXAMPLES = {
    "campaign": "reclab campaign --scenario tiny --experiment default --days 2 --data-dir data --fresh",
    "run-day": "reclab run-day --day 3 --data-dir data",
    "report": "reclab report --data-dir data",
    "dashboard": "reclab dashboard --data-dir data --port 8501",
    "up": "reclab up --team --data-dir data",
    "down": "reclab down",
}


def parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("reclab")
    except PackageNotFoundError:
        release = "unknown (not installed)"
    fmt = _Help
    p = argparse.ArgumentParser(prog="reclab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()))
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Prefect's and MLflow's logs and libraries' warnings (anywhere on the line)")
    p.add_argument("--version", action="version", version=f"reclab {release}")
    sub = p.add_subparsers(dest="command", required=True)
    real_add = sub.add_parser

    def add_parser(name: str, **kw):
        q = real_add(name, formatter_class=fmt, epilog=f"example: {EXAMPLES[name]}",
                     description=kw.get("help"), **kw)
        q.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show Prefect's and MLflow's logs and libraries' warnings")
        return q
    sub.add_parser = add_parser

    c = sub.add_parser("campaign", help="bootstrap day then N days of the A/B experiment")
    c.add_argument("--scenario", default="small", help="preset in configs/scenarios or a YAML path")
    c.add_argument("--experiment", default="default", help="preset in configs/experiments or a YAML path")
    c.add_argument("--days", type=int, default=3, help="A/B days after the bootstrap day")
    c.add_argument("--data-dir", default="data", help="lake, models and MLflow store of this campaign")
    c.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    c.add_argument("--name", default=None, help="MLflow experiment name (None: from the configs)")
    c.add_argument("--fresh", action="store_true", help="delete --data-dir first")
    c.add_argument("--rerun", action="store_true",
                   help="run every day again (without it the days already complete are kept)")
    c.add_argument("--scale", default="local", help="local (in-process) or dask (shards on a Dask cluster)")
    c.add_argument("--shards", type=int, default=None,
                   help="user-hash shards per day (None: 1 local, one per core with dask)")
    c.add_argument("--dask-address", default=None, help="scheduler of an existing Dask cluster "
                   "(None: DASK_SCHEDULER_ADDRESS, else a LocalCluster)")
    c.set_defaults(func=cmd_campaign)

    d = sub.add_parser("run-day", help="(re-)run one day of an existing campaign")
    d.add_argument("--day", type=int, required=True, help="the day to run; the days before it must exist")
    d.add_argument("--data-dir", default="data", help="the campaign's data directory")
    d.set_defaults(func=cmd_run_day)

    r = sub.add_parser("report", help="print CTR and latency per arm per day")
    r.add_argument("--data-dir", default="data", help="the campaign's data directory")
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("dashboard", help="open the Streamlit dashboard")
    s.add_argument("--data-dir", default="data", help="the campaign's data directory")
    s.add_argument("--port", type=int, default=8501, help="port to listen on")
    s.add_argument("--address", default="127.0.0.1", help="address to listen on")
    s.set_defaults(func=cmd_dashboard)

    u = sub.add_parser("up", help="start the stack on localhost: Prefect, deployments, MLflow, dashboard")
    u.add_argument("--data-dir", default="data", help="the data directory every service shares")
    u.add_argument("--state-dir", default=".stack", help="where pids and logs are kept")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (localhost by default)")
    u.add_argument("--team", action="store_true", help="the team stack: PostgreSQL behind Prefect and "
                   "MLflow (both with logins), a work pool and worker, a Dask scheduler and workers")
    u.add_argument("--dask-workers", type=int, default=2, help="Dask worker processes with --team")
    u.set_defaults(func=cmd_up)

    dn = sub.add_parser("down", help="stop exactly what `reclab up` started")
    dn.add_argument("--state-dir", default=".stack", help="where `up` kept pids and logs")
    dn.set_defaults(func=cmd_down)
    return p


class Stopped(KeyboardInterrupt):
    """SIGTERM (docker stop, a Prefect cancellation) unwinds like Ctrl-C: runs are marked FAILED."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_environment(args.verbose)
    from components.ab import SplitError
    from components.lake import LakeError
    from flows.stack import StackError

    previous = signal.signal(signal.SIGTERM, _stop) if _main_thread() else None
    try:
        return args.func(args)
    except (ConfigError, LakeError, SplitError, StackError) as exc:
        print(f"reclab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        why = str(exc) if isinstance(exc, Stopped) else "interrupted"
        print(f"reclab: {why}; the days completed are kept: run the same command again to resume",
              file=sys.stderr)
        return 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
