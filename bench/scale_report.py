"""bench.scale's outputs: bench/scale.json, bench/scale.png and its RESULTS section, the notes
(load, the 10M-user day on paper) computed from the measured points."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET_USERS = 10_000_000
QUIET_LOAD = 1.5


def _power(users: list[float], values: list[float]) -> tuple[float, float]:
    """(exponent, coefficient) of values ~ coefficient * users**exponent, fitted on the log scale."""
    b, log_a = np.polyfit(np.log(users), np.log(np.maximum(values, 1e-6)), 1)
    return float(b), float(np.exp(log_a))


def stage_fits(points: dict[str, dict]) -> dict[str, dict]:
    """Per stage: exponent of wall time and of peak RSS against users, and both at 10M users."""
    users = [float(u) for u in points]
    stages = next(iter(points.values()))["stages"]
    out = {}
    for name in stages:
        row = {}
        for key in ("wall_s", "peak_rss_gb"):
            b, a = _power(users, [p["stages"][name][key] for p in points.values()])
            row[key] = {"exponent": round(b, 3), "at_10M": round(a * TARGET_USERS ** b, 2)}
        out[name] = row
    return out


def paper_day(fits: dict[str, dict], workers: int) -> tuple[str, dict]:
    """The 10M-user / 1M-item day on `workers` machines of this size, from the per-stage fits:
    serving divides by the workers (shards by user hash), every other stage runs once."""
    if not fits:
        return "", {}
    per_stage = {name: f["wall_s"]["at_10M"] / (workers if name == "serve" else 1) for name, f in fits.items()}
    bound = max(per_stage, key=per_stage.get)
    total = sum(per_stage.values())
    memory = max(f["peak_rss_gb"]["at_10M"] for f in fits.values())
    serve_mem = fits.get("serve", {}).get("peak_rss_gb", {}).get("at_10M", 0.0)
    text = (f"10M users / 1M items on paper (power law per stage fitted to the measured points): "
            f"about {total / 60:.0f} min a day with serving on {workers} workers, bounded by `{bound}` "
            f"({per_stage[bound] / 60:.0f} min); the largest stage peak extrapolates to {memory:.1f} GB "
            f"(serve {serve_mem:.1f} GB in one process, {serve_mem / workers:.1f} GB a worker if the shard's "
            f"share were all of it)")
    return text, {"workers": workers, "stage_wall_s": {k: round(v, 1) for k, v in per_stage.items()},
                  "bound_by": bound, "total_wall_s": round(total, 1), "largest_stage_peak_gb": memory}


def _figure(results: dict[str, dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.results import save_figure
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in results.items():
        users = [int(u) for u in points]
        axes[0].plot(users, [p["wall_s"] for p in points.values()], "o-", label=name)
        axes[1].plot(users, [p["peak_rss_gb"] for p in points.values()], "o-", label=name)
        if any(p.get("worker_peak_rss_gb") for p in points.values()):
            axes[1].plot(users, [p["worker_peak_rss_gb"] for p in points.values()], "x--", label=f"{name} worker")
    for ax, what in zip(axes, ("wall time of the day (s)", "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users (items: a tenth)")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def write(results: dict[str, dict], fits: dict[str, dict], workers: int, section: bool = True) -> None:
    from bench.results import append
    per_stage = {name: stage_fits(points) for name, points in results.items() if len(points) >= 2}
    default = per_stage.get("default", {})
    note, paper = paper_day(default, max(workers, 1)) if default else ("", {})
    loads = [p["load_before"] for points in results.values() for p in points.values()]
    busy = [f"{n} {u}" for n, points in results.items() for u, p in points.items()
            if max(p["load_before"], p["load_after"]) >= QUIET_LOAD]
    load_note = (f"1-minute load {min(loads):.1f} to {max(loads):.1f} before the points"
                 + (f"; at or above {QUIET_LOAD} around {', '.join(busy)}: those wall times are not speed "
                    f"figures (the machine was shared), their memory is" if busy else ", a quiet machine"))
    out = {**results, "fit": {name: {**fits.get(name, {}), "stages": per_stage.get(name, {})} for name in results},
           "paper_10M": paper}
    (HERE / "scale.json").write_text(json.dumps(out, indent=1) + "\n")
    _figure(results, HERE / "scale.png")
    if not section:
        return
    rows = []
    for name, points in results.items():
        for users, p in points.items():
            st = p["stages"]
            rows.append([name, f"{int(users):,}", f"{p['requests']:,}", p["wall_s"],
                         *(st[s]["wall_s"] for s in ("serve", "finish", "samples", "train")),
                         p["peak_rss_gb"], p.get("worker_peak_rss_gb") or "", f"{p['bytes_written'] / 2**20:.0f}",
                         p["load_before"]])
    exps = "; ".join(f"{n}: wall ~ users^{f['wall_s']['exponent']}, peak RSS ~ users^{f['peak_rss_gb']['exponent']}"
                     for n, f in fits.items() if f)
    append("Cost of a day against the size of the world (bench.scale)",
           ["experiment", "users", "requests", "wall s", "serve s", "finish s", "samples s", "train s",
            "peak RSS GB", "worker peak GB", "MB written", "load"], rows,
           notes=f"{load_note}. Fitted: {exps}. {note}. Figures in bench/scale.json; picture: bench/scale.png")
