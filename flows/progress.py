"""Progress of long work: a no-op by default; the CLI installs a rich progress display."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Reporter(Protocol):
    def start(self, total: int, text: str) -> None: ...

    def stage(self, text: str) -> None: ...

    def track(self, items: Iterable[T], total: int, text: str) -> Iterator[T]: ...


class _PrefectProgress:
    """Inside a Prefect task run: a progress artifact the UI shows, updated every ~5 %."""

    def start(self, total: int, text: str) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def track(self, items: Iterable[T], total: int, text: str) -> Iterator[T]:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact
        from prefect.context import TaskRunContext

        if TaskRunContext.get() is None or total == 0:
            yield from items
            return
        artifact = create_progress_artifact(progress=0.0, description=text)
        step = max(total // 20, 1)
        for i, item in enumerate(items, 1):
            yield item
            if i % step == 0 or i == total:
                update_progress_artifact(artifact_id=artifact, progress=100.0 * i / total)


_reporter: Reporter = _PrefectProgress()


def install(reporter: Reporter | None) -> None:
    """Use `reporter` (e.g. the CLI's progress bars); None restores Prefect progress artifacts."""
    global _reporter
    _reporter = reporter or _PrefectProgress()


def start(total: int, text: str) -> None:
    """Announce `total` stages of work; each `stage` call then marks one as begun."""
    _reporter.start(total, text)


def stage(text: str) -> None:
    _reporter.stage(text)


def track(items: Iterable[T], total: int, text: str) -> Iterator[T]:
    return _reporter.track(items, total, text)
