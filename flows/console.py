"""What the `reclab` command shows on the console: quiet libraries (unless -v), a progress bar, the
summary table of a campaign, and where to look next."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

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


