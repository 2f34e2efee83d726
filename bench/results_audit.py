"""Which sections of bench/RESULTS.md have the JSON they came from? Lists those that do not.

A section is backed when it names a JSON under bench/ (`bench/<name>.json` anywhere in it, its
command's `--out` included) that exists, and every headline figure of it (its title and its table:
numbers with a unit, metric values: `figures`) is a number of that
JSON. Sections are never edited by hand, so one that is not backed (written before benches kept a
JSON, by a run on another machine whose JSON stayed there, or whose JSON a later run replaced) is
named, with the reason, in a new section appended by this script: the record says which figures
stand on the log alone. tests/bench/test_readme_figures.py fails on an unbacked section that no
such audit names.

    python -m bench.results_audit           # appends the audit section when some section needs it
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from components.ab import AnalysisConfig
from components.ab.stats import Z95
from components.experiment import ExperimentConfig
from components.features.columns import MICRO_BATCH_SECONDS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
AUDIT_TITLE = "Audit: sections above with no JSON behind their figures"
UNITS = r"%|ms\b|s\b|seconds?\b|minutes?\b|min\b|hours?\b|x\b|×|[a-z]+/s\b|[KMG]i?B\b"
FIGURE = re.compile(rf"(?<![\w.:/=-])(\d{{1,3}}(?:,\d{{3}})+|\d+(?:\.\d+)?)\s?({UNITS})")
METRIC = re.compile(r"(?<![\w.:/=-])0\.\d{2,}\b")
_EXPERIMENT = ExperimentConfig.__dataclass_fields__
# Numbers the text gives that are not measurements: each with the value it must equal.
NOT_FIGURES: dict[str, Callable[[], float]] = {
    "95 %": lambda: round((2 * stats.norm.cdf(Z95) - 1) * 100, 6),  # the intervals' confidence level
    "0.05": lambda: AnalysisConfig().alpha,                         # the tests' alpha
    "0.001": lambda: AnalysisConfig().srm_alpha,                    # SRM flagged below it
    "50 %": lambda: AnalysisConfig().p99_max_increase * 100,        # the latency guardrail
    "1 ms": lambda: AnalysisConfig().p99_min_ms,                    # ... and its floor
    "5 %": lambda: _EXPERIMENT["feature_log_rate"].default * 100,   # the logged share of requests
    "15 minutes": lambda: MICRO_BATCH_SECONDS / 60,                 # the feature stream's micro-batch
}
_NAMED = re.compile(r"bench/([\w.-]+\.json)")
_DATE = re.compile(r"^- date: (.+)$", re.M)


@dataclass(frozen=True)
class Section:
    title: str
    date: str
    text: str

    @property
    def key(self) -> str:
        # A row of the audit's table names it: no cell separator inside.
        return f"{self.title} ({self.date or 'no date'})".replace("|", "/")

    @property
    def headline(self) -> str:
        """The title and the table rows: what a reader takes away."""
        return "\n".join([self.title, *(line for line in self.text.splitlines() if line.startswith("|"))])

    @property
    def named(self) -> list[str]:
        return sorted(set(_NAMED.findall(self.text)))


def sections(text: str | None = None) -> list[Section]:
    text = RESULTS.read_text() if text is None else text
    out = []
    for chunk in re.split(r"\n(?=## )", text)[1:]:
        title = chunk.splitlines()[0][3:].strip()
        date = m.group(1).strip() if (m := _DATE.search(chunk)) else ""
        out.append(Section(title, date, chunk))
    return out


def figures(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, the figure as printed, its digits) for each figure of `text`: a number with a
    unit of measurement (%, ms, s, minutes, a rate, a speed-up) or a metric value (a decimal below 1
    with two or more digits, e.g. a recall@K)."""
    for number, line in enumerate(text.splitlines(), 1):
        for m in FIGURE.finditer(line):
            yield number, m.group(0), m.group(1)
        for m in METRIC.finditer(line):
            yield number, m.group(0), m.group(0)


def found(printed: str, digits: str, values: list[float]) -> bool:
    """Some value prints as the figure does (same digits after rounding, or x100 for a percentage)."""
    plain = digits.replace(",", "")
    places = len(plain.split(".")[1]) if "." in plain else 0
    scales = (1.0, 100.0) if printed.endswith("%") else (1.0,)
    return any(f"{x * s:.{places}f}" == plain for x in values for s in scales)


def numbers(value) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


def why_unbacked(s: Section) -> str:
    """'' when backed; else the reason, in words."""
    present = [n for n in s.named if (HERE / n).is_file()]
    if not present:
        return "names no JSON under bench/" if not s.named else f"names {', '.join(s.named)}, not in the repository"
    values = [x for n in present for x in numbers(json.loads((HERE / n).read_text()))]
    missing = [p for _, p, d in figures(s.headline) if p not in NOT_FIGURES and not found(p, d, values)]
    if missing:
        return (f"{len(missing)} figures ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) are not in "
                f"{', '.join('bench/' + n for n in present)}, which a later run rewrote or never held them")
    return ""


def audited(all_sections: list[Section]) -> set[str]:
    """Keys of the sections an audit section names (each audit names sections above it)."""
    return {line[2:].split(" | ")[0].strip() for s in all_sections if s.title == AUDIT_TITLE
            for line in s.text.splitlines() if line.startswith("| ") and not line.startswith("| section |")}


def unbacked(all_sections: list[Section] | None = None) -> list[tuple[Section, str]]:
    """Sections (audits aside) whose figures have no JSON behind them, with the reason."""
    return [(s, why) for s in (sections() if all_sections is None else all_sections) if s.title != AUDIT_TITLE
            and (why := why_unbacked(s))]


def main() -> None:
    from bench.results import append

    done = audited(sections())
    todo = [(s, why) for s, why in unbacked() if s.key not in done]
    if not todo:
        print("every section is backed or already audited")
        return
    append(AUDIT_TITLE, ["section", "why"], [[s.key, why] for s, why in todo],
           notes=f"{len(todo)} sections; their figures stand on this log alone (the benches of later sections "
                 f"write the JSON they name)")
    print(f"{len(todo)} sections audited")


if __name__ == "__main__":
    main()
