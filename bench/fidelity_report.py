"""bench.fidelity's report: the ratios' intervals, the picture and the RESULTS.md sections."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

from bench.results import append, save_figure

HERE = Path(__file__).resolve().parent
ALGORITHMS = ("popular", "itemcf", "sasrec", "generative")

STRUCTURE_SHOWN = ("users", "items", "events", "length_mean", "length_median", "repeat_rate",
                   "last_in_top10_popular", "last_in_top10_tail_popular", "last_lateness", "top1pct_share", "gini", "last_in_top10_cooc", "last_in_top50_cooc", "last_forward_only", "last_backward_only",
                   "lag3_in_top50_cooc", "lag6_in_top50_cooc", "last_in_top50_taste", "last_in_top10_taste64")


def ratio_interval(sim: float, n_sim: int, real: float, n_real: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of sim / real for two R@10 figures. Each is a share of users (one held-out item
    a user, hit or not), so its standard error is binomial; the ratio's comes by the delta method on
    the log scale. Either side at 0 leaves the ratio unbounded: (nan, nan)."""
    if not (0 < sim < 1 and 0 < real < 1 and n_sim > 0 and n_real > 0):
        return float("nan"), float("nan")
    spread = z * math.sqrt((1 - sim) / (sim * n_sim) + (1 - real) / (real * n_real))
    ratio = sim / real
    return ratio * math.exp(-spread), ratio * math.exp(spread)


def picture(result: dict, stem: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algs = [a for a in ALGORITHMS if a in result]
    sources = ["real"] + [k for k in ("sim", "sim_uniform", "sim_loop") if all(k in result[a] for a in algs)]
    labels = {"real": "real log", "sim": "simulated, organic", "sim_uniform": "simulated, uniform slates",
              "sim_loop": "simulated, loop policy"}
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(sources)
    for j, src in enumerate(sources):
        ax.bar(np.arange(len(algs)) + j * width, [result[a][src]["recall@10"] for a in algs], width, label=labels[src])
    ax.set_xticks(np.arange(len(algs)) + width * (len(sources) - 1) / 2, algs)
    ax.set_ylabel("Recall@10 (leave-one-out, full ranking)")
    ax.set_title(f"{stem}: the same algorithms on the real and the simulated logs")
    ax.legend()
    return save_figure(fig, path)


def resolution(result: dict) -> str:
    """How finely this log can tell a ratio from 1: the widest interval of a perfect world's ratio,
    had the simulated figure equalled the real one over as many users."""
    n = int(result["structure"]["real"]["users"])
    widths = {a: ratio_interval(v["real"]["recall@10"], n, v["real"]["recall@10"], n)
              for a, v in result.items() if a in ALGORITHMS}
    widths = {a: w for a, w in widths.items() if w[0] == w[0]}
    if not widths:
        return "no interval"
    a = max(widths, key=lambda x: widths[x][1])
    return (f"a world exactly as good as the real log, over {n:,} users, would still read "
            f"{widths[a][0]:.2f}-{widths[a][1]:.2f} for {a}")


def empty_logs(result: dict) -> str:
    """A sentence on the exposures whose simulated log kept nobody after 5-core filtering."""
    parts = [f"{p} ({v['clicks']:,} clicks from {v['users_clicking']:,} users, {v['users_5core']} users in the 5-core)"
             for p, v in result.get("no_5core", {}).items()]
    return f"No 5-core log, so no figures, under: {'; '.join(parts)}. " if parts else ""


def polished(calibration: dict) -> str:
    """The popularity polish, when the calibration ran one: where it started and where it ended."""
    tried = calibration.get("polish")
    if not tried:
        return ""
    return (f"; popularity polished on the whole log from the search's {tried[0]['popularity']:.3f} (loss "
            f"{tried[0]['loss']:.3f} over its simulated logs) to {calibration['knobs']['popularity']:.3f} (loss "
            f"{calibration['polish_loss']:.3f}), {len(tried)} points")


def results_section(stem: str, result: dict, algs: list[str], sources: list[str], args: argparse.Namespace,
                    load: list[float]) -> None:
    key = {"organic": "sim", "uniform": "sim_uniform", "loop": "sim_loop"}
    header = ["algorithm", "real R@10", "real N@10"]
    for src in sources[1:]:
        header += [f"{src} R@10", f"{src} / real"]
    rows = []
    for a in algs:
        real = result[a]["real"]["recall@10"]
        row = [a, f"{real:.4f}", f"{result[a]['real']['ndcg@10']:.4f}"]
        for src in sources[1:]:
            if key[src] not in result[a]:          # an exposure this algorithm was not run on
                row += ["-", "-"]
                continue
            sim = result[a][key[src]]["recall@10"]
            lo, hi = result.get("sim_over_real_95", {}).get(a, {}).get(key[src], (float("nan"),) * 2)
            interval = f" ({lo:.2f}-{hi:.2f})" if lo == lo else ""
            row += [f"{sim:.4f}", f"{sim / real:.2f}{interval}" if real else "-"]
        rows.append(row)
    def tau(src: str) -> str:
        suffix = "" if src == "organic" else "_" + src
        if f"kendall_tau{suffix}" not in result:
            return f"{src}: not every algorithm was run on it, no Kendall tau"
        kept, total = result[f"order_kept{suffix}"]
        return f"{src}: Kendall tau {result[f'kendall_tau{suffix}']:.2f}, order kept {kept} of {total} pairs differing by >10 %"
    taus = "; ".join(tau(src) for src in sources[1:])
    many = [f"{a} on {src} {len(v['replicas'])} ({int(v['users']):,} users)" for a in algs
            for src, v in result[a].items() if isinstance(v, dict) and "replicas" in v]
    if many:
        taus += ("; a simulated R@10 over several simulated logs of the same world (simulation seeds seed+1, "
                 "seed+2, ...) is their mean, its interval over all their users: " + ", ".join(many))
    k = result["calibration"]["knobs"]
    s = result["settings"]
    # A merged entry holds several runs (e.g. the neural models on a GPU, the slate exposures here):
    # each says what it ran, where, and under what load.
    def settings(r: dict) -> str:
        neural = [f"SASRec {r.get('sasrec_epochs', s['sasrec_epochs'])} epochs" if "sasrec" in r["algorithms"] else "",
                  f"generative {r.get('generative_epochs', s['generative_epochs'])} epochs" if "generative" in r["algorithms"] else "",
                  f"{r['days']} days of slates" if "days" in r and set(r["policies"]) - {"organic"} else "",
                  f"real-log figures from {Path(r['real_from']).name}" if r.get("real_from") else ""]
        return ", ".join(x for x in neural if x)

    runs = "; ".join(f"{', '.join(r['algorithms'])} on {', '.join(r['policies']) or 'the real log'} "
                     f"({r['device']}, {r['threads']} threads, {r['seconds'] / 60:.1f} min, load "
                     f"{r['load_min']:.1f}-{r['load_max']:.1f}{'; ' + settings(r) if settings(r) else ''})"
                     for r in result.get("runs", []))
    out = f"bench/{args.out.name}" if args.out.resolve().parent == HERE else str(args.out)
    append(f"Fidelity: {stem}, real log against the world calibrated to it", header, rows,
           notes=(f"figures in {out}; {taus}. In brackets: the ratio's 95 % interval, from each R@10's binomial "
                  f"standard error over its log's users ({resolution(result)}). {empty_logs(result)}Calibrated knobs: popularity {k['popularity']:.3f}, relevance {k['relevance']:.2f}, "
                  f"floor {k['floor']:.2e}, smooth {k.get('smooth', 0):.2f}, repeat {k['repeat']:g}, lifecycle "
                  f"{k.get('lifecycle', 0):.2f}, sequence {k.get('sequence', 1):g}, memory {k.get('memory', 3)}, space "
                  f"{k.get('space', 'cooc')}, backward {k.get('backward', 0.5):g} (loss "
                  f"{result['calibration'].get('loss', float('nan')):.3f}){polished(result['calibration'])}; seed {s['seed']}; "
                  f"runs: {runs}; niceness {os.nice(0)}; this run's 1-minute load {min(load):.1f} to {max(load):.1f}"))
    st = result["structure"]
    sources = [src for src in sources if src in st]
    append(f"Fidelity: {stem}, structure of the real and the simulated logs", ["statistic", *sources],
           [[name, *(f"{st[src][name]:.4f}" if st[src][name] < 100 else f"{st[src][name]:,.0f}" for src in sources)]
            for name in STRUCTURE_SHOWN],
           notes=f"figures in {out}; " "last event of each sequence held out; tail_popular: the 10 items most often last in the held-in part; popularity and co-occurrence (window 3) counted on the rest; "
                 "lagL: the item L positions before the one before the held-out event, its top-50 co-occurring items; "
                 "taste (taste64): nearest items to the user's past on the held-in log's 16 (64) leading singular "
                 "vectors; the file "
                 "format has no timestamps, so inter-event gaps cannot be compared")
