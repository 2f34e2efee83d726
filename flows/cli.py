"""The `reclab` command: run campaigns and days, print reports, open the dashboard and MLflow."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.typedconf import ConfigError
from flows.console import (RichReporter, _experiment_of, _next_steps, _quiet_environment,  # noqa: F401
                           _quiet_run_failures, print_summary)

REPO = Path(__file__).resolve().parents[1]


def cmd_campaign(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from components.experiment import load_experiment
    from sim.config import load_scenario

    # Fail on a bad config before the orchestrator starts, with just the one-line message.
    from flows.params import knob_overrides, parse_knobs
    from story.campaign import override, with_online_store

    knobs = parse_knobs(args.world)
    world = override(load_scenario(args.scenario), knob_overrides(knobs))
    exp = with_online_store(load_experiment(args.experiment), args.online_store)
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
                         scale=args.scale, shards=shards, dask_address=args.dask_address, world=knobs,
                         online_store=args.online_store)
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
                       dask_workers=args.dask_workers, redis_port=int(env.get("RECLAB_REDIS_PORT", 6379)))


def cmd_up(args: argparse.Namespace) -> int:
    from flows.stack import up
    from flows.tracking import ui_url

    cfg = _stack_config(args)
    what = ("PostgreSQL, Redis, Prefect server and worker, MLflow server, Dask scheduler and workers, dashboard"
            if cfg.team else "Prefect server, flow deployments, MLflow server and dashboard")
    print(f"starting {what} (a minute or two)...")
    record = up(cfg)
    print(f"Prefect UI:  http://{cfg.host}:{cfg.prefect_port}   (Deployments -> campaign -> Run)")
    print(f"MLflow UI:   {ui_url(cfg.mlflow_uri)}")
    print(f"Dashboard:   {cfg.dashboard_url}")
    if cfg.team:
        from flows.team import credentials_file

        print(f"Dask:        {cfg.dask_address} (dashboard http://{cfg.host}:{cfg.dask_dashboard_port})")
        print(f"Redis:       {cfg.redis_url}   (online feature store: the campaign's online_store parameter, "
              f"or --online-store)")
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
    c.add_argument("--world", action="append", default=[], metavar="KNOB=VALUE",
                   help="a scenario knob over the preset, repeatable: users, new_users_per_day, items, "
                        "new_items_per_day, organic, drift, fatigue, position_decay, churn_rate "
                        "(e.g. --world users=2000 --world organic=0.3)")
    c.add_argument("--online-store", default=None, metavar="URL",
                   help="serve features from the Redis server at URL (online_store: {kind: redis, url: URL} "
                        "over the experiment's; None keeps its store), e.g. the one `reclab up --team` prints")
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
                   "MLflow (both with logins), a work pool and worker, a Dask scheduler and workers, Redis "
                   "(the online feature store)")
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
