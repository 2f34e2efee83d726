"""Append benchmark rows to bench/RESULTS.md with the command, machine and date."""
from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def append(title: str, header: list[str], rows: list[list[object]], notes: str = "") -> None:
    """Add one section: the exact command, machine and date, then the table."""
    command = " ".join(["python", "-m", sys.modules["__main__"].__spec__.name, *sys.argv[1:]])
    lines = [f"\n## {title}\n", f"- command: `{command}`", f"- machine: {machine()}",
             f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"]
    if notes:
        lines.append(f"- {notes}")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by the benchmark named in its command.\n")
    with RESULTS.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
