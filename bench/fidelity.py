"""Does the simulated world teach recommenders what the real log teaches them?

Calibrate a world from any file in the `user item item ...` format (sim/fit.py: tastes,
popularity and item-to-item transitions from the log, a few scalars searched on structure
statistics), simulate its users under each exposure (bench/fidelity_policies.py), write every
simulated click log in the same format, 5-core filtered like the input, and run the same offline
protocol (bench/beauty.py: leave-one-out, full ranking) for each algorithm on the real log and on
every simulated one. Writes bench/fidelity.json (one entry per data file stem), a section of
bench/RESULTS.md and a picture.

    python -m bench.fidelity --data ../shared/data/amazon-beauty/Beauty.txt \
        [--algorithms popular,itemcf,sasrec,generative] [--policies organic,uniform,loop] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from bench import beauty, beauty_generative, beauty_traditional
from bench.fidelity_policies import POLICIES, simulate, write_log
from bench.fidelity_report import ALGORITHMS, HERE, picture, ratio_interval, results_section  # noqa: F401
from sim import fit
from sim.structure import k_core, structure

TRADITIONAL = {"popular": "popular", "itemcf": "itemcf_window", "sasrec": "sasrec"}
def run_algorithm(name: str, path: Path, args: argparse.Namespace) -> dict[str, float]:
    """The protocol's figures for one algorithm on one log file."""
    split = beauty.load(path)
    t0 = time.perf_counter()
    if name == "generative":
        gargs = beauty_generative.parser().parse_args(
            ["--data", str(path), "--out", os.devnull, "--device", args.device, "--epochs", str(args.generative_epochs),
             "--threads", str(args.threads), "--budget-minutes", str(args.budget_minutes)])
        metrics = beauty_generative.fit_and_evaluate(split, gargs)[0]
    else:
        targs = beauty_traditional.parser().parse_args(
            ["--data", str(path), "--out", os.devnull, "--device", args.device, "--threads", str(args.threads),
             "--sasrec-epochs", str(args.sasrec_epochs), "--budget-minutes", str(args.budget_minutes)])
        data = beauty_traditional.train_data(split, "test")
        model = beauty_traditional.channels(targs)[TRADITIONAL[name]].fit(data)
        metrics, _ = beauty.evaluate(split, beauty_traditional.score_fn(model, split, data, targs.depth, "test",
                                                                        targs.ties), "test")
    out = {k: round(v, 5) for k, v in metrics.items()}
    print(f"    {name:10s} {path.name:28s} R@10 {out['recall@10']:.4f}  N@10 {out['ndcg@10']:.4f}  "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


SETTINGS = {"sasrec": ("sasrec_epochs", "budget_minutes"), "generative": ("generative_epochs", "budget_minutes")}


def real_figures(path: Path, stem: str, algs: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The real log's figures of an earlier run (its JSON's entry for this file): they do not
    depend on the calibration, so a recalibrated world need not train on the real log again. Only
    figures measured with this run's training settings are taken; any other is one line."""
    try:
        entry = json.loads(path.read_text())[stem]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: --real-from {path}: no entry for {stem} ({type(exc).__name__}: {exc})") from None
    out = {}
    for alg in algs:
        runs = [r for r in entry.get("runs", []) if alg in r.get("algorithms", [])]
        if alg not in entry or not runs:
            raise SystemExit(f"error: --real-from {path}: {stem} has no real figure for {alg}; drop it from --algorithms")
        differ = [k for k in SETTINGS.get(alg, ()) if runs[-1].get(k) != getattr(args, k)]
        if differ:
            raise SystemExit(f"error: --real-from {path}: {alg} there was trained with "
                             f"{', '.join(f'{k} {runs[-1].get(k)}' for k in differ)}, not this run's "
                             f"{', '.join(f'{k} {getattr(args, k)}' for k in differ)}")
        out[alg] = entry[alg]["real"]
        print(f"    {alg:10s} {args.data.name:28s} R@10 {out[alg]['recall@10']:.4f}  (from {path})")
    return out


def measured(metrics: dict[str, float]) -> dict[str, float]:
    return {m: v for m, v in metrics.items() if m in ("recall@10", "ndcg@10")}


def replicated(runs: list[dict[str, float]], users: int) -> dict[str, object]:
    """One algorithm on each replica of a simulated log: the mean figures, each replica's, and the
    users the mean is over (every replica's 5-core users), which its standard error counts."""
    out: dict[str, object] = {m: round(float(np.mean([r[m] for r in runs])), 5) for m in ("recall@10", "ndcg@10")}
    if len(runs) > 1:
        out["replicas"] = [measured(r) for r in runs]
        out["users"] = users
    return out


def kendall(real: list[float], sim: list[float]) -> float:
    from scipy.stats import kendalltau
    return float(kendalltau(real, sim).statistic) if len(real) >= 2 else float("nan")


def order_kept(real: dict[str, float], sim: dict[str, float], margin: float = 0.10) -> tuple[int, int]:
    """Pairs whose real figures differ by more than `margin` (relative), and how many keep their order."""
    names, kept, total = list(real), 0, 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if abs(real[a] - real[b]) > margin * min(real[a], real[b]):
                total += 1
                kept += (real[a] - real[b]) * (sim[a] - sim[b]) > 0
    return kept, total


def knob_overrides(pairs: list[str]) -> dict[str, float | int | str]:
    """`--knob name=value` pairs, typed as the Knobs field; an unknown name or a bad value is one line."""
    from dataclasses import fields
    types = {f.name: f.type for f in fields(fit.Knobs)}
    out: dict[str, float | int | str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types or not value:
            raise SystemExit(f"error: --knob {pair!r}: expected name=value with name one of {sorted(types)}")
        try:
            if types[name] in (str, "str"):
                out[name] = value
            else:
                out[name] = int(value) if types[name] in (int, "int") else float(value)
        except ValueError:
            raise SystemExit(f"error: --knob {pair!r}: {value!r} is not a {types[name]}") from None
    return out


def calibrate(seqs: list[np.ndarray], n_items: int, args: argparse.Namespace, workdir: Path):
    overrides = knob_overrides(args.knob)
    if args.calibration:
        saved = saved_search(Path(args.calibration), args.data.stem)
        knobs = replace(fit.Knobs(**saved["knobs"]), **overrides)
        print(f"  knobs from {args.calibration}{' with ' + ', '.join(args.knob) if overrides else ''}: {knobs}")
        return knobs, {**saved, "knobs": asdict(knobs), "overrides": overrides}
    print(f"  calibrating on {min(args.search_users, len(seqs)):,} users, {args.search_evals} evaluations")
    res = fit.search(seqs, n_items, workdir, users=args.search_users, evaluations=args.search_evals,
                     start=replace(fit.Knobs(repeat=repeat_penalty(seqs)), **overrides), seed=args.seed)
    out = {"knobs": asdict(res.knobs), "loss": res.loss, "evaluations": res.evaluations}
    if args.polish_evals and "popularity" not in overrides:
        print(f"  polishing popularity on all {len(seqs):,} users, {args.polish_replicas} simulated logs a point")
        pol = fit.polish(seqs, n_items, res.knobs, workdir, replicas=args.polish_replicas,
                         evaluations=args.polish_evals, seed=args.seed)
        out = {**out, "knobs": asdict(pol.knobs), "search_knobs": asdict(res.knobs), "polish_loss": pol.loss,
               "polish": pol.evaluations}
        return pol.knobs, out
    return res.knobs, out


def earlier_runs(everything: dict, args: argparse.Namespace, stem: str, knobs: dict) -> list[dict]:
    """The entries for `stem` this run joins (--merge: its own --out; --merge-from: other files),
    each refused with one line unless it was calibrated with the same knobs."""
    entries = [(args.out, everything[stem])] if args.merge and stem in everything else []
    for path in args.merge_from:
        try:
            entries.append((path, json.loads(path.read_text())[stem]))
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"error: --merge-from {path}: no run for {stem} can be read there ({exc!r})") from None
    for path, entry in entries:
        if entry.get("calibration", {}).get("knobs") != knobs:
            raise SystemExit(f"error: {path} holds a run for {stem} with other knobs than this one's; merge only "
                             f"runs of one calibration (give --calibration {path})")
    return [entry for _, entry in entries]


def saved_search(path: Path, stem: str) -> dict:
    """An earlier search: a search JSON, bench/calibration.json, or bench/fidelity.json (by stem)."""
    saved = json.loads(path.read_text())
    for candidate in (saved, saved.get("calibration", {}), saved.get(stem, {}).get("calibration", {})):
        if isinstance(candidate, dict) and "knobs" in candidate:
            return candidate
    raise SystemExit(f"error: {path} holds no calibration knobs (for {stem}); run without --calibration to search")


def repeat_penalty(seqs: list[np.ndarray]) -> float:
    """A log without repeats gets users who never take an item twice; one with repeats, none."""
    rate = sum(len(s) - len(np.unique(s)) for s in seqs) / max(sum(map(len, seqs)), 1)
    return 8.0 if rate < 0.01 else 0.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a log in the `user item item ...` format")
    p.add_argument("--out", type=Path, default=HERE / "fidelity.json")
    p.add_argument("--workdir", type=Path, default=HERE / "out" / "fidelity", help="simulated logs and worlds")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS))
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--days", type=int, default=30, help="days simulated under the slate policies")
    p.add_argument("--search-users", type=int, default=8000, help="users the calibration search simulates")
    p.add_argument("--search-evals", type=int, default=30, help="points the calibration search tries")
    p.add_argument("--polish-evals", type=int, default=5,
                   help="points the popularity polish on the whole log tries after the search (0: none)")
    p.add_argument("--polish-replicas", type=int, default=3, help="simulated logs averaged at each polish point")
    p.add_argument("--calibration", type=Path, help="reuse the knobs of an earlier run's calibration JSON")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="set one of sim.fit.Knobs (the saved knobs', or the search's start point); repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replicas", type=int, default=1,
                   help="simulated logs per exposure (seeds seed+1, seed+2, ...): each algorithm's simulated "
                        "figure is their mean, so the world's own sampling noise shrinks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sasrec-epochs", type=int, default=30)
    p.add_argument("--generative-epochs", type=int, default=40)
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training cap of each neural model")
    p.add_argument("--merge-from", action="append", default=[], type=Path, metavar="JSON",
                   help="also keep what another run of the same calibration wrote for this file (its --out, "
                        "e.g. from another machine); repeatable, a later file's figures replacing an earlier one's")
    p.add_argument("--real-from", metavar="JSON",
                   help="take the real log's figures from an earlier run's JSON (same training settings) "
                        "instead of training on the real log again")
    p.add_argument("--merge", action="store_true",
                   help="keep the algorithms an earlier run wrote for this file (same --calibration)")
    p.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    algs = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = sorted(set(algs) - set(ALGORITHMS)) + sorted(set(policies) - set(POLICIES))
    if bad:
        print(f"error: unknown {bad}; algorithms are {list(ALGORITHMS)}, policies {list(POLICIES)}", file=sys.stderr)
        return 2
    if args.replicas < 1:
        print(f"error: --replicas {args.replicas}: give at least 1 simulated log per exposure", file=sys.stderr)
        return 2
    import torch
    torch.set_num_threads(args.threads)
    try:
        _, seqs, n_items = fit.read_sequence_log(args.data)
        beauty.load(args.data)       # the protocol needs 3+ items a user: refuse early, with its line
    except (fit.LogFormatError, beauty.BeautyDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stem = args.data.stem
    # Checked before anything is simulated: a figure that cannot be reused is one line, at once.
    reused = real_figures(Path(args.real_from), stem, algs, args) if args.real_from else {}
    workdir = args.workdir / stem
    workdir.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    print(f"{stem}: {len(seqs):,} users, {n_items:,} items, {sum(map(len, seqs)):,} events")
    knobs, calibration = calibrate(seqs, n_items, args, workdir)
    (workdir / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    arrays = fit.fit_arrays(seqs, n_items, knobs, seed=args.seed) if policies else {}
    lengths = np.array([len(s) for s in seqs])
    logs = {"real": args.data}
    stats = {"real": structure(seqs, n_items)}
    empty: dict[str, dict[str, int]] = {}
    replicas: dict[str, list[Path]] = {}
    users: dict[str, int] = {}           # 5-core users over an exposure's replicas
    for policy in policies:
        for r in range(args.replicas):
            t = time.perf_counter()
            raw = simulate(policy, arrays, knobs, lengths, workdir, args.days, args.seed + 1 + r)
            sim = k_core(raw)
            if len(sim) < 10:
                # Kept in the JSON and the notes: an exposure whose log has no 5-core is a finding.
                empty[policy] = {"clicks": int(sum(map(len, raw))), "users_clicking": int(sum(len(s) > 0 for s in raw)),
                                 "users_5core": len(sim)}
                print(f"  {policy}: only {len(sim)} users keep 5 events after 5-core filtering "
                      f"({empty[policy]['clicks']:,} clicks in all); skipped")
                replicas.pop(policy, None)
                break
            # The first replica keeps the name (and the seed) a single-replica run has.
            users[policy] = users.get(policy, 0) + len(sim)
            replicas.setdefault(policy, []).append(write_log(workdir / f"sim-{policy}{f'-r{r}' if r else ''}.txt", sim))
            if r == 0:
                stats[policy] = structure(sim, int(max(s.max() for s in sim)) + 1)
            print(f"  {policy}{f' replica {r}' if r else ''}: {len(sim):,} users, {sum(map(len, sim)):,} events "
                  f"after 5-core ({time.perf_counter() - t:.0f} s)", flush=True)
            load.append(os.getloadavg()[0])
        if policy in replicas:
            logs[policy] = replicas[policy][0]
    result: dict[str, object] = {}
    algs_run = list(algs)
    key = {"real": "real", "organic": "sim", "uniform": "sim_uniform", "loop": "sim_loop"}
    for alg in algs:
        result[alg] = {"real": reused[alg] if alg in reused else measured(run_algorithm(alg, args.data, args))}
        for src, paths in replicas.items():
            result[alg][key[src]] = replicated([run_algorithm(alg, path, args) for path in paths], users[src])
        load.append(os.getloadavg()[0])
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    earlier = earlier_runs(everything, args, stem, calibration["knobs"])
    # Algorithms and exposures measured by earlier runs of the same calibration join this one's:
    # a later file's figure replaces an earlier file's, and this run's replaces them all.
    for old in reversed(earlier):
        for a in ALGORITHMS:
            if a in old or a in result:
                result[a] = {**old.get(a, {}), **result.get(a, {})}
        stats = {**old.get("structure", {}), **stats}
    if earlier:
        algs = [a for a in ALGORITHMS if a in result]
        logs = {**{src: None for old in earlier for src in old.get("structure", {})}, **logs}
    for src in logs:
        if src == "real":
            continue
        if not all(key[src] in result[a] for a in algs):
            continue
        real = {a: result[a]["real"]["recall@10"] for a in algs}
        sim = {a: result[a][key[src]]["recall@10"] for a in algs}
        suffix = "" if src == "organic" else f"_{src}"
        result[f"kendall_tau{suffix}"] = kendall(list(real.values()), list(sim.values()))
        result[f"order_kept{suffix}"] = list(order_kept(real, sim))
    # The table's ratios, kept beside the figures they come from.
    result["sim_over_real"] = {a: {key[src]: round(result[a][key[src]]["recall@10"] / result[a]["real"]["recall@10"], 2)
                                   for src in logs if src != "real" and key[src] in result[a] and result[a]["real"]["recall@10"]}
                               for a in algs}
    result["sim_over_real_95"] = {
        a: {key[src]: [round(v, 2) for v in ratio_interval(result[a][key[src]]["recall@10"],
                                                           int(result[a][key[src]].get("users", stats[src]["users"])),
                                                           result[a]["real"]["recall@10"], int(stats["real"]["users"]))]
            for src in logs if src != "real" and src in stats and key[src] in result[a]}
        for a in algs}
    result["structure"] = stats
    result["no_5core"] = {**{k: v for old in earlier for k, v in old.get("no_5core", {}).items()}, **empty}
    result["calibration"] = calibration
    result["runs"] = [r for old in earlier for r in old.get("runs", [])] + [
        {"algorithms": algs_run, "policies": policies, "device": args.device, "threads": args.threads,
         "days": args.days, "sasrec_epochs": args.sasrec_epochs, "generative_epochs": args.generative_epochs,
         "budget_minutes": args.budget_minutes, "seed": args.seed,
         "replicas": args.replicas, "real_from": args.real_from, "seconds": round(time.perf_counter() - t0, 1), "load_min": min(load), "load_max": max(load)}][
        : 1 if algs_run or policies else 0]        # a run that only combines others measured nothing
    result["settings"] = earlier[0]["settings"] if earlier else {"days": args.days, "seed": args.seed, "device": args.device, "threads": args.threads,
                          "sasrec_epochs": args.sasrec_epochs, "generative_epochs": args.generative_epochs,
                          "search_users": args.search_users, "search_evals": args.search_evals,
                          "seconds": round(time.perf_counter() - t0, 1), "load_min": min(load), "load_max": max(load)}
    everything[stem] = result
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    pic = picture(result, stem, args.out.with_name(f"fidelity-{stem}.png"))
    print(f"wrote {args.out} and {pic}")
    if not args.no_results:
        results_section(stem, result, algs, list(logs), args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
