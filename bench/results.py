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


def conditions(load_before: tuple[float, float, float]) -> dict:
    """What the machine gave this run: cores, CPU affinity, niceness, load before and after (for
    the JSON beside a section; `conditions_note` words it for the section itself)."""
    return {"cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "niceness": os.nice(0),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def conditions_note(c: dict) -> str:
    pinned = f", pinned to {c['affinity']}" if c["affinity"] != c["cores"] else ""
    return (f"niceness {c['niceness']}; 1-minute load average {c['load_average_before'][0]:.1f} before, "
            f"{c['load_average_after'][0]:.1f} after, on {c['cores']} cores{pinned} (os.getloadavg, "
            f"which counts every job on this machine)")


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


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure (its folder made) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json_key(path: Path, key: str, value) -> None:
    """Read-merge-write one key of a JSON other scripts also write keys of, atomically."""
    import json

    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
