"""Progress of long work: a no-op by default; the CLI installs a rich progress display."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Reporter(Protocol):
    def start(self, total: int, text: str) -> None: ...

    def stage(self, text: str) -> None: ...

    def track(self, items: Iterable[T], total: int, text: str) -> Iterator[T]: ...


class _Silent:
    def start(self, total: int, text: str) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def track(self, items: Iterable[T], total: int, text: str) -> Iterator[T]:
        yield from items


_reporter: Reporter = _Silent()


def install(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter or _Silent()


def start(total: int, text: str) -> None:
    """Announce `total` stages of work; each `stage` call then marks one as begun."""
    _reporter.start(total, text)


def stage(text: str) -> None:
    _reporter.stage(text)


def track(items: Iterable[T], total: int, text: str) -> Iterator[T]:
    return _reporter.track(items, total, text)
