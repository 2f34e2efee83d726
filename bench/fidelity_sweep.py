"""Which world teaches what the real log teaches? Simulated figures of several candidate worlds, side by side.

bench.fidelity runs one calibrated world against the real log; this runs the same simulation and
protocol for several variants of its knobs at once (one process each), on the simulated logs
only, so that a change to the world's structure can be judged before a full run. The real log's
figures are read from bench/fidelity.json (same file stem), where bench.fidelity measured them.

    python -m bench.fidelity_sweep --data Beauty.txt --variant '{"space": "next", "backward": 0}' ...
        [--base bench/fidelity.json] [--algorithms popular,itemcf,sasrec,generative] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from bench import fidelity
from bench.fidelity_policies import write_log
from bench.results import append
from sim import fit
from sim.structure import k_core, structure

HERE = Path(__file__).resolve().parent
SHOWN = ("last_in_top10_tail_popular", "last_lateness", "last_in_top10_cooc", "last_in_top50_cooc", "last_pair_seen",
         "last_forward_only", "last_backward_only", "lag6_in_top50_cooc", "last_in_top10_taste64", "last_in_top10_near64")


def one_variant(data: Path, base: dict, variant: dict, algorithms: list[str], args: argparse.Namespace,
                workdir: Path) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    _, seqs, n_items = fit.read_sequence_log(data)
    knobs = replace(fit.Knobs(**base), **variant)
    t0 = time.perf_counter()
    arrays = fit.fit_arrays(seqs, n_items, knobs, seed=args.seed)
    lengths = np.array([len(s) for s in seqs])
    workdir.mkdir(parents=True, exist_ok=True)
    sim = k_core(fit.simulate_organic(arrays, knobs, lengths, workdir / "world.npz", seed=args.seed + 1))
    st = structure(sim, int(max(s.max() for s in sim)) + 1)
    path = write_log(workdir / "sim.txt", sim)
    sim_r = {a: fidelity.run_algorithm(a, path, args) for a in algorithms}
    return {"variant": variant, "knobs": asdict(knobs), "sim": sim_r, "structure": {k: st[k] for k in SHOWN},
            "seconds": round(time.perf_counter() - t0, 1)}


def parser() -> argparse.ArgumentParser:
    p = fidelity.parser()
    p.description = __doc__.splitlines()[0]
    p.set_defaults(out=HERE / "fidelity_variants.json", workdir=HERE / "out" / "fidelity_sweep")
    p.add_argument("--variant", action="append", default=[], metavar="JSON",
                   help="knobs to change from the base, as a JSON object; repeatable, one world each")
    p.add_argument("--base", type=Path, default=HERE / "fidelity.json",
                   help="the calibrated knobs and the real log's figures (bench.fidelity's JSON)")
    p.add_argument("--processes", type=int, default=0, help="variants at a time (0: all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    try:
        variants = [json.loads(v) for v in args.variant]
        fields = set(asdict(fit.Knobs()))
        bad = sorted({k for v in variants for k in v} - fields)
    except json.JSONDecodeError as exc:
        print(f"error: --variant is not a JSON object ({exc})", file=sys.stderr)
        return 2
    if not variants or bad or set(algorithms) - set(fidelity.ALGORITHMS):
        print(f"error: give one or more --variant with keys of {sorted(fields)} (unknown: {bad}) and algorithms "
              f"of {list(fidelity.ALGORITHMS)}", file=sys.stderr)
        return 2
    stem = args.data.stem
    saved = json.loads(args.base.read_text()).get(stem) if args.base.exists() else None
    if not saved or "calibration" not in saved:
        print(f"error: {args.base} has no calibrated entry for {stem}; run bench.fidelity on {args.data} first",
              file=sys.stderr)
        return 2
    base = saved["calibration"]["knobs"]
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.processes or len(variants)) as pool:
        futures = [pool.submit(one_variant, args.data, base, v, algorithms, args, args.workdir / stem / f"v{i}")
                   for i, v in enumerate(variants)]
        rows = [f.result() for f in futures]
    load.append(os.getloadavg()[0])
    real = {a: saved[a]["real"] for a in algorithms if a in saved}
    _, seqs, n_items = fit.read_sequence_log(args.data)
    real_st = structure(seqs, n_items)
    for r in rows:   # the ratios the table shows, kept in the JSON behind it
        r["sim_over_real"] = {a: round(r["sim"][a]["recall@10"] / real[a]["recall@10"], 2) for a in algorithms
                              if a in real and real[a]["recall@10"]}
        if {"sasrec", "itemcf"} <= set(r["sim"]) and r["sim"]["itemcf"]["recall@10"]:
            r["sasrec_over_itemcf"] = round(r["sim"]["sasrec"]["recall@10"] / r["sim"]["itemcf"]["recall@10"], 2)
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    run = {"device": args.device, "threads": args.threads, "processes": args.processes or len(variants),
           "sasrec_epochs": args.sasrec_epochs, "generative_epochs": args.generative_epochs,
           "budget_minutes": args.budget_minutes, "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1),
           "load_min": min(load), "load_max": max(load)}
    everything.setdefault(stem, {"runs": []}).update(real=real, real_structure={k: real_st[k] for k in SHOWN})
    everything[stem]["runs"].append({**run, "variants": rows})
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    if not args.no_results:
        real_ratio = (f"{real['sasrec']['recall@10'] / real['itemcf']['recall@10']:.2f}"
                      if {"sasrec", "itemcf"} <= set(real) else "-")
        header = ["variant", *[f"{a} R@10 (/ real)" for a in algorithms], "sasrec / itemcf", *SHOWN]
        table = [["real log", *[f"{real[a]['recall@10']:.4f}" if a in real else "-" for a in algorithms],
                  real_ratio, *[f"{real_st[k]:.4f}" for k in SHOWN]]]
        for r in rows:
            cells = [json.dumps(r["variant"]).replace("|", "/")]
            for a in algorithms:
                x = r["sim"][a]["recall@10"]
                cells.append(f"{x:.4f} ({x / real[a]['recall@10']:.2f})" if a in real else f"{x:.4f}")
            cells.append(f"{r['sasrec_over_itemcf']:.2f}" if "sasrec_over_itemcf" in r else "-")
            cells += [f"{r['structure'][k]:.4f}" for k in SHOWN]
            table.append(cells)
        append(f"Fidelity sweep: {stem}, candidate worlds (simulated, organic exposure)", header, table,
               notes=(f"base knobs from {args.base.name} ({stem}); real R@10 "
                      + ", ".join(f"{a} {real[a]['recall@10']:.4f}" for a in real)
                      + f", real sasrec / itemcf {real_ratio}; {len(variants)} worlds, {run['processes']} at a time, "
                      f"{args.device}, {args.threads} threads each, SASRec {args.sasrec_epochs} epochs, generative "
                      f"{args.generative_epochs} epochs, cap {args.budget_minutes:g} min a model; seed {args.seed}; "
                      f"{run['seconds'] / 60:.1f} min; 1-minute load {min(load):.1f} to {max(load):.1f}"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
