"""Every measured figure README states comes from a benchmark's JSON under bench/.

A figure is a number with a unit of measurement (%, ms, s, minutes, a rate, a speed-up) or a metric
value (a decimal below 1 with two or more digits, e.g. a recall@K). It is found when some number in
bench/*.json prints as README prints it (same digits after rounding, or x100 for a percentage). The
few numbers README gives that are settings or definitions, not measurements, are listed in
NOT_FIGURES with the config value they must equal, so a changed default cannot leave README behind.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from scipy import stats

from components.ab import AnalysisConfig
from components.ab.stats import Z95
from components.features.columns import MICRO_BATCH_SECONDS
from components.experiment import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
UNITS = r"%|ms\b|s\b|seconds?\b|minutes?\b|min\b|hours?\b|x\b|×|[a-z]+/s\b|[KMG]i?B\b"
FIGURE = re.compile(rf"(?<![\w.:/=-])(\d{{1,3}}(?:,\d{{3}})+|\d+(?:\.\d+)?)\s?({UNITS})")
METRIC = re.compile(r"(?<![\w.:/=-])0\.\d{2,}\b")

_EXPERIMENT = ExperimentConfig.__dataclass_fields__
# Numbers README gives that are not measurements: each with the value it must equal.
NOT_FIGURES: dict[str, Callable[[], float]] = {
    "95 %": lambda: round((2 * stats.norm.cdf(Z95) - 1) * 100, 6),  # the intervals' confidence level
    "0.05": lambda: AnalysisConfig().alpha,                         # the tests' alpha
    "0.001": lambda: AnalysisConfig().srm_alpha,                    # SRM flagged below it
    "50 %": lambda: AnalysisConfig().p99_max_increase * 100,        # the latency guardrail
    "1 ms": lambda: AnalysisConfig().p99_min_ms,                    # ... and its floor
    "5 %": lambda: _EXPERIMENT["feature_log_rate"].default * 100,   # the logged share of requests
    "15 minutes": lambda: MICRO_BATCH_SECONDS / 60,                 # the feature stream's micro-batch
}


def figures(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, the figure as printed, its digits) for each figure of `text`."""
    for number, line in enumerate(text.splitlines(), 1):
        for m in FIGURE.finditer(line):
            yield number, m.group(0), m.group(1)
        for m in METRIC.finditer(line):
            yield number, m.group(0), m.group(0)


def json_numbers() -> list[float]:
    def walk(v) -> Iterator[float]:
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            yield float(v)
        elif isinstance(v, dict):
            for x in v.values():
                yield from walk(x)
        elif isinstance(v, list):
            for x in v:
                yield from walk(x)

    return [x for path in sorted((REPO / "bench").glob("*.json")) for x in walk(json.loads(path.read_text()))]


def found(printed: str, digits: str, numbers: list[float]) -> bool:
    plain = digits.replace(",", "")
    places = len(plain.split(".")[1]) if "." in plain else 0
    scales = (1.0, 100.0) if printed.endswith("%") else (1.0,)
    return any(f"{x * s:.{places}f}" == plain for x in numbers for s in scales)


def test_the_figure_parser_reads_what_readme_writes():
    got = [(p, d) for _, p, d in figures("recall 0.0889 at 1,234 users/s, p99 3.2 ms, 12 % better; "
                                         "bench/x.json, seed=3, day=00001, v2.0")]
    assert got == [("1,234 users/s", "1,234"), ("3.2 ms", "3.2"), ("12 %", "12"), ("0.0889", "0.0889")]
    assert found("12 %", "12", [0.1204]) and found("3.2 ms", "3.2", [3.17]) and not found("3.2 ms", "3.2", [3.26])


def test_settings_named_as_numbers_match_their_config():
    for printed, value in NOT_FIGURES.items():
        digits = re.match(r"[\d.]+", printed).group(0)
        assert float(digits) == value(), (printed, value())


def test_every_figure_in_readme_is_in_a_benchmark_json():
    numbers = json_numbers()
    missing = [f"README.md:{line}: {printed}" for line, printed, digits in figures((REPO / "README.md").read_text())
               if printed not in NOT_FIGURES and not found(printed, digits, numbers)]
    assert missing == [], f"figures with no JSON under bench/ behind them: {missing}"
