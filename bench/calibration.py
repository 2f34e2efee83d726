"""Fit a scenario to a sequential log and write it: `python -m bench.calibration --data FILE`.

The scenario (configs/scenarios/<name>.yaml, `beauty` by default) names the log (`fitted`) and the
knobs the search found (sim/fit.py); the world is fitted from the log whenever it is built. The
command also simulates the fitted users' organic sequences and writes the structure statistics of
both logs to bench/calibration.json and a section of bench/RESULTS.md. `simulate_counts`,
`compare` and `picture` keep the marginal comparison under uniform slates.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from bench.results import save_figure
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
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Fit a scenario to a sequential log (sim/fit.py) and write it to configs/scenarios/<name>.yaml."""
    import os
    import sys
    from dataclasses import asdict

    from sim import fit
    from sim.structure import k_core, structure

    p = argparse.ArgumentParser(description="Fit a world's joint structure to a log and write its scenario.")
    p.add_argument("--data", type=Path, default=BEAUTY)
    p.add_argument("--name", default="beauty", help="scenario name: writes configs/scenarios/<name>.yaml")
    p.add_argument("--calibration", type=Path, help="take the knobs of an earlier search (its JSON) instead")
    p.add_argument("--organic", type=float, default=0.5,
                   help="share of the scenario's visits that also take an item found on one's own (as `small`)")
    p.add_argument("--search-users", type=int, default=8000)
    p.add_argument("--search-evals", type=int, default=40)
    p.add_argument("--polish-evals", type=int, default=5,
                   help="points the popularity polish on the whole log tries after the search (0: none)")
    p.add_argument("--scenario-dir", type=Path, default=SCENARIO_DIR)
    p.add_argument("--out", type=Path, default=HERE / "calibration.json")
    p.add_argument("--no-results", action="store_true")
    args = p.parse_args(argv)
    from bench.results import append

    try:
        _, seqs, n_items = fit.read_sequence_log(args.data)
    except fit.LogFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.calibration:
        from bench.fidelity import saved_search
        saved = saved_search(args.calibration, args.data.stem)
        knobs, search = fit.Knobs(**saved["knobs"]), saved
    else:
        from bench.fidelity import repeat_penalty
        res = fit.search(seqs, n_items, HERE / "out" / "calibration", users=args.search_users,
                         evaluations=args.search_evals, start=fit.Knobs(repeat=repeat_penalty(seqs)))
        knobs, search = res.knobs, {"knobs": asdict(res.knobs), "loss": res.loss, "evaluations": res.evaluations}
        if args.polish_evals:
            pol = fit.polish(seqs, n_items, knobs, HERE / "out" / "calibration", evaluations=args.polish_evals)
            knobs, search = pol.knobs, {**search, "knobs": asdict(pol.knobs), "search_knobs": search["knobs"],
                                        "polish_loss": pol.loss, "polish": pol.evaluations}
    data = args.data.resolve()
    rel = os.path.relpath(data, args.scenario_dir.resolve())
    arrays = fit.fit_arrays(seqs, n_items, knobs)
    if not 0 <= args.organic <= 1:
        print(f"error: --organic must be a share in [0, 1], got {args.organic}", file=sys.stderr)
        return 2
    cfg = fit.fitted_scenario(arrays, knobs, rel, name=args.name, organic=args.organic)
    args.scenario_dir.mkdir(parents=True, exist_ok=True)
    (args.scenario_dir / f"{args.name}.yaml").write_text(
        f"# Fitted to {args.data.name} by `python -m bench.calibration {' '.join(sys.argv[1:] if argv is None else argv)}`"
        f" (sim/fit.py):\n"
        f"# the world is fitted from the log itself when it is built (`fitted`, relative to this folder).\n"
        + yaml.safe_dump(to_mapping(cfg), sort_keys=False))
    (HERE / "out").mkdir(exist_ok=True)
    sim = k_core(fit.simulate_organic(arrays, knobs, np.array([len(s) for s in seqs]),
                                      HERE / "out" / "calibration-world.npz"))
    real_st, sim_st = structure(seqs, n_items), structure(sim, n_items)
    result = {"data": str(args.data), "scenario": args.name, "calibration": search,
              "structure": {"real": real_st, "organic": sim_st}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.scenario_dir / (args.name + '.yaml')} and {args.out}")
    if not args.no_results:
        shown = f"bench/{args.out.name}" if args.out.resolve().parent == HERE else str(args.out)
        append(f"Calibration of the {args.name} scenario to {args.data.name}: structure, real against simulated",
               ["statistic", "real", "simulated (organic, 5-core)", "matched by the search"],
               [[k, f"{real_st[k]:.4f}", f"{sim_st.get(k, float('nan')):.4f}", "yes" if k in fit.MATCHED else ""]
                for k in real_st if k not in ("users", "events")],
               notes=(f"figures in {shown}; knobs {asdict(knobs)}; search loss {search.get('loss', float('nan')):.3f} over "
                      f"{len(search.get('evaluations', []))} points; niceness {os.nice(0)}; "
                      f"1-minute load {os.getloadavg()[0]:.1f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
