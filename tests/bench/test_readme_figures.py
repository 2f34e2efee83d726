"""Every measured figure README states comes from a benchmark's JSON under bench/, and every section
of bench/RESULTS.md has the JSON its figures came from (or an audit section says it has none).

A figure is a number with a unit of measurement (%, ms, s, minutes, a rate, a speed-up) or a metric
value (a decimal below 1 with two or more digits, e.g. a recall@K). It is found when some number in
bench/*.json prints as README prints it (same digits after rounding, or x100 for a percentage). The
few numbers README gives that are settings or definitions, not measurements, are listed in
NOT_FIGURES with the config value they must equal, so a changed default cannot leave README behind.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from bench import results_audit
from bench.results_audit import NOT_FIGURES, figures, found

REPO = Path(__file__).resolve().parents[2]


def json_numbers() -> list[float]:
    return [x for path in sorted((REPO / "bench").glob("*.json"))
            for x in results_audit.numbers(json.loads(path.read_text()))]


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


RESULTS_SAMPLE = """# Benchmark results

## Fast thing: 3.2 ms
- command: `python -m bench.fast --out bench/fast.json`
- date: 2026-01-01 00:00 UTC

| check | result |
|---|---|
| p99 | 3.2 ms at 0.052 |

## Old thing, before benches kept a JSON
- date: 2025-01-01 00:00 UTC

| a | b |
|---|---|
| x | 7.5 s |
"""


def test_a_section_is_backed_only_by_the_json_it_names(tmp_path, monkeypatch):
    monkeypatch.setattr(results_audit, "HERE", tmp_path)
    (tmp_path / "fast.json").write_text(json.dumps({"p99_ms": 3.21, "rate": 0.0521}))
    got = {s.title: results_audit.why_unbacked(s) for s in results_audit.sections(RESULTS_SAMPLE)}
    assert got["Fast thing: 3.2 ms"] == ""
    assert got["Old thing, before benches kept a JSON"] == "names no JSON under bench/"
    # The same section against a JSON a later run rewrote: the figures it no longer holds are named.
    (tmp_path / "fast.json").write_text(json.dumps({"p99_ms": 4.0, "rate": 0.0521}))
    why = results_audit.why_unbacked(results_audit.sections(RESULTS_SAMPLE)[0])
    assert "3.2 ms" in why and "bench/fast.json" in why
    # An audit section names what is not backed; the audit's rows are read back as section keys.
    audit = (f"\n## {results_audit.AUDIT_TITLE}\n- date: 2026-02-01 00:00 UTC\n\n| section | why |\n|---|---|\n"
             f"| Old thing, before benches kept a JSON (2025-01-01 00:00 UTC) | names no JSON under bench/ |\n")
    listed = results_audit.audited(results_audit.sections(RESULTS_SAMPLE + audit))
    assert listed == {"Old thing, before benches kept a JSON (2025-01-01 00:00 UTC)"}


def test_every_results_section_has_its_json_or_an_audit_says_it_has_none():
    all_sections = results_audit.sections()
    listed = results_audit.audited(all_sections)
    # An audit names only the sections above it: one appended later must have its JSON.
    bad = [f"{s.key}: {why}" for s, why in results_audit.unbacked(all_sections) if s.key not in listed]
    assert bad == [], ("sections of bench/RESULTS.md whose figures are in no JSON they name; re-run their "
                       f"bench so it writes one, or record it with `python -m bench.results_audit`: {bad}")


def _paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each paragraph or list item of `text`."""
    out, start, lines = [], 1, []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("- ") or line.startswith("#"):
            if lines:
                out.append((start, "\n".join(lines)))
            start, lines = number, ([line] if line.strip() else [])
            if not line.strip():
                start += 1
        else:
            lines.append(line)
    if lines:
        out.append((start, "\n".join(lines)))
    return out


def test_a_readme_paragraph_that_names_its_json_takes_its_figures_from_it():
    """Where README says which run a figure came from, the figure is in that run's JSON (not just
    somewhere under bench/, where a number of another run can match it by chance)."""
    wrong = []
    for start, text in _paragraphs((REPO / "README.md").read_text()):
        named = [n for n in sorted(set(re.findall(r"bench/([\w.-]+\.json)", text))) if (REPO / "bench" / n).is_file()]
        if not named:
            continue
        values = [x for n in named for x in results_audit.numbers(json.loads((REPO / "bench" / n).read_text()))]
        wrong += [f"README.md:{start + line - 1}: {printed} (not in {', '.join(named)})"
                  for line, printed, digits in figures(text) if printed not in NOT_FIGURES
                  and not found(printed, digits, values)]
    assert wrong == []
