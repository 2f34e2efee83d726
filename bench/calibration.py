"""Fit a scenario to Amazon Beauty, simulate it, and measure how close the simulated log comes.

Writes configs/scenarios/beauty.yaml, a picture of both distributions (default into the lake folder
data/lake/calibration/), bench/calibration.json and a section of bench/RESULTS.md. The simulated
log is a month of uniformly random slates, so the distances measure the world, not a recommender.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from common.typedconf import to_mapping
from sim import calibrate
from sim.behavior import request_uniform, respond
from sim.config import SCENARIO_DIR, WorldConfig
from sim.rng import stream
from sim.state import DayLog, advance, initial_state
from sim.traffic import traffic
from sim.world import make_world

BEAUTY = Path("/work/shared/data/amazon-beauty/Beauty.txt")
HERE = Path(__file__).resolve().parent


def simulate_counts(cfg: WorldConfig, days: int, slate_size: int = 10) -> calibrate.Log:
    """Clicks of `days` days of uniformly random slates, as a Log."""
    world, users, items = make_world(cfg, days), [], []
    state = initial_state(make_world(cfg, 0))
    for day in range(days):
        tr = traffic(world, state, day, stream(cfg.seed, day, "traffic"))
        slates = stream(cfg.seed, day, "random-slates").integers(0, world.n_items, (len(tr.user_id), slate_size))
        clicked = respond(world, state, tr.user_id, slates, request_uniform(cfg.seed, day, tr.request_id)).clicked
        r, k = np.nonzero(clicked)
        users.append(tr.user_id[r])
        items.append(slates[r, k])
        shown = np.repeat(tr.user_id, slate_size)
        state = advance(world, state, DayLog(shown, slates.reshape(-1), clicked.reshape(-1)))
    return calibrate.Log(np.concatenate(users), np.concatenate(items))


def compare(real: calibrate.Log, sim: calibrate.Log, min_count: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, attr in (("user_activity", "user_counts"), ("item_popularity", "item_counts")):
        a = calibrate.centred_log(getattr(real, attr), min_count)
        b = calibrate.centred_log(getattr(sim, attr), min_count)
        out[name] = {"ks": calibrate.ks_distance(a, b), "wasserstein": calibrate.wasserstein(a, b),
                     "real_std": float(a.std()), "sim_std": float(b.std()), "real_n": len(a), "sim_n": len(b)}
    return out


def picture(real: calibrate.Log, sim: calibrate.Log, min_count: int, path: Path) -> Path:
    """Rank-frequency and histogram of log counts, Beauty beside the simulated world."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, attr, title in ((axes[0], "item_counts", "item popularity"), (axes[1], "user_counts", "user activity")):
        for log, label in ((real, "Amazon Beauty (5-core)"), (sim, "simulated (beauty scenario)")):
            c = np.sort(getattr(log, attr)[getattr(log, attr) >= min_count])[::-1]
            ax.loglog(np.arange(1, len(c) + 1) / len(c), c / c.mean(), label=label)
        ax.set_xlabel("rank / number of entities")
        ax.set_ylabel("interactions / mean")
        ax.set_title(f"{title} (entities with >= {min_count} interactions)")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=BEAUTY)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("data/lake/calibration"))
    p.add_argument("--categories", type=int, default=20)
    args = p.parse_args()
    from bench.results import append

    real = calibrate.read_sequences(args.data)
    fitted = calibrate.fit(real, args.categories)
    cfg = calibrate.scenario(fitted)
    (SCENARIO_DIR / "beauty.yaml").write_text(
        f"# Fitted to {args.data.name} by `python -m bench.calibration` (see sim/calibrate.py).\n"
        + yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    sim = simulate_counts(cfg, args.days)
    min_count = int(real.user_counts.min())     # the log is 5-core: compare like with like
    dist = compare(real, sim, min_count)
    png = picture(real, sim, min_count, args.out / "beauty_vs_sim.png")
    result = {"fit": vars(fitted), "days": args.days, "min_count": min_count, "distances": dist, "picture": str(png)}
    (HERE / "calibration.json").write_text(json.dumps(result, indent=2))
    append("Calibration to Amazon Beauty: distance between simulated and real log-count distributions",
           ["distribution", "KS", "Wasserstein-1 (log units)", "std real", "std sim", "n real", "n sim"],
           [[k, f"{v['ks']:.3f}", f"{v['wasserstein']:.3f}", f"{v['real_std']:.2f}", f"{v['sim_std']:.2f}",
             v["real_n"], v["sim_n"]] for k, v in dist.items()],
           notes=f"fit: {vars(fitted)}; simulated {args.days} days of uniformly random slates of 10; "
                 f"counts >= {min_count} on both sides, log counts centred; picture: {png}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
