"""Fit a world's joint structure to a real sequential log: tastes, popularity and transitions.

sim/calibrate.py reads logs and fits marginals; this module fits what recommenders learn from.
The fixed part comes straight from the log (item positions from its singular vectors, user tastes
from what they took, item quality from counts, the transition kernel from co-occurrence); a few
free scalars (`Knobs`) are then searched so that the simulated log's structure statistics
(sim/structure.py: popularity, co-occurrence and low-rank taste predictability of the held-out
event) match the real log's. Nothing here knows which log it is: any file of the format works.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sim.calibrate import Log, item_embedding, kmeans
from sim.config import (BehaviorConfig, FitConfig, ItemConfig, OracleConfig, SequenceConfig, TrafficConfig,
                        UserConfig, WorldConfig)
from sim.structure import cooccurrence, lateness, transition_factors

class LogFormatError(ValueError):
    """The log is not in the `user item item ...` sequential format."""


def read_sequence_log(path: Path) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Read `user item item ...` lines (items in time order): user ids, sequences with item ids
    made dense from 0, and the number of items. A malformed file is refused with one line."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LogFormatError(f"{path}: cannot be read ({exc})") from None
    users, seqs = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids = [int(x) for x in line.split()]
        except ValueError:
            raise LogFormatError(f"{path}:{n}: expected integers 'user item item ...', got {line[:60]!r}") from None
        if len(ids) < 2:
            raise LogFormatError(f"{path}:{n}: expected 'user item item ...', got {line.strip()[:60]!r}")
        users.append(ids[0])
        seqs.append(np.asarray(ids[1:], np.int64))
    if not seqs:
        raise LogFormatError(f"{path}: no sequences; expected one line 'user item item ...' per user")
    uniq, dense = np.unique(np.concatenate(seqs), return_inverse=True)
    cuts = np.cumsum([len(s) for s in seqs])[:-1]
    return np.asarray(users), [d.astype(np.int64) for d in np.split(dense, cuts)], len(uniq)


@dataclass(frozen=True)
class Knobs:
    """The world's free scalars, set by the calibration search (bench/calibration.py)."""

    popularity: float = 0.5      # item quality = popularity * centred log count
    relevance: float = 6.0       # utility per unit of taste match
    sequence: float = 0.8        # SequenceConfig.weight
    floor: float = 1.3e-5        # SequenceConfig.floor
    lag_decay: float = 0.5
    repeat: float = 0.0          # utility lost on an item the user already took
    backward: float = 0.0        # weight of "b before a" when counting a -> b transitions: real logs are
                                 # directed (a cleanser, then a toner), so none by default
    damping: float = 0.5         # a transition a -> b counts / count(b) ** damping: popular b less
    smooth: float = 0.5          # share of each item's transitions on the low-rank kernel
    discount: float = 0.0        # subtracted from every pair count: one-off pairs are mostly noise
    lifecycle: float = 0.0       # BehaviorConfig.lifecycle: how far an item's time in the log moves its
                                 # utility from a sequence's start to its end (searched per log)
    memory: int = 1              # SequenceConfig.memory: the items that shape the next choice (more than one
                                 # hands windowed item-CF the world's own model: bench.fidelity_sweep)
    dim: int = 64                # latent dimensions of tastes and items (a fine taste needs more than 16)
    neighbours: int = 50         # targets of each item on the low-rank kernel
    temperature: float = 0.1     # cosine gap that divides a low-rank transition's weight by e
    space: str = "next"          # where the low-rank kernel's neighbours are found: "cooc" (co-occurrence
                                 # factors), "latent" (the items' positions: who took them, anywhere) or
                                 # "next" (items resembling, on "latent", those the log's pairs lead to)


def fit_arrays(seqs: list[np.ndarray], n_items: int, knobs: Knobs, n_categories: int = 20, dim: int | None = None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """The day-0 world of a fitted scenario, from the whole log.

    Items sit on the leading singular vectors of the user x item matrix, users at the mean of the
    items they took; an item's quality is its centred log count; transitions are the log's own
    co-occurrence at most three positions apart (forward, and `backward` for the reverse order),
    row-normalised into the kernel. Users carry their real activity (events relative to the mean).
    """
    dim = min(dim or knobs.dim, n_items - 1, len(seqs) - 1)   # a small log has fewer axes than asked
    users = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    items = np.concatenate(seqs)
    log = Log(users, items)
    latent = item_embedding(log, dim=dim, seed=seed).astype(np.float32)                 # [I, d]
    labels = kmeans(latent, n_categories, seed=seed)
    centre = np.stack([latent[labels == c].mean(axis=0) if np.any(labels == c) else latent[c]
                       for c in range(n_categories)])
    centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
    taste = np.zeros((len(seqs), dim))
    np.add.at(taste, users, latent[items])
    taste /= np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)
    logc = np.log(np.bincount(items, minlength=n_items) + 1.0)
    src, dst, w = cooccurrence(seqs, n_items, forward=1.0, backward=knobs.backward)
    # Co-occurrence counts grow with the popularity of both items; the quality term carries
    # popularity already, so the kernel is damped by the target's count.
    count = np.bincount(items, minlength=n_items).astype(float)
    src, dst, w = _kernel(src, dst, w, count, n_items, knobs, latent)
    lengths = np.array([len(s) for s in seqs], float)
    late, _ = lateness(seqs, n_items)
    return {"user_taste": taste.astype(np.float32), "user_activity": lengths / lengths.mean(),
            "item_latent": latent, "item_lateness": late.astype(np.float32), "item_quality": (knobs.popularity * (logc - logc.mean())).astype(np.float32),
            "item_category": labels.astype(np.int32), "leaf_centre": centre.astype(np.float32),
            "edge_src": src.astype(np.int32), "edge_dst": dst.astype(np.int32), "edge_weight": w.astype(np.float32)}


def _row_normalised(src: np.ndarray, w: np.ndarray, n_items: int) -> np.ndarray:
    total = np.bincount(src, weights=w, minlength=n_items)
    return w / np.maximum(total[src], 1e-300)


def _kernel(src: np.ndarray, dst: np.ndarray, w: np.ndarray, count: np.ndarray, n_items: int,
            knobs: Knobs, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transition edges: the log's discounted, damped co-occurrence, and a share `smooth` on the
    low-rank kernel (each item's `knobs.neighbours` best targets by cosine in `knobs.space`).

    Counted pairs alone make a world too faithful to the sample: a pair seen once in the log
    becomes a path every simulated user may take. Discounting removes part of that noise and the
    low-rank kernel spreads the mass over items that behave alike, as real transitions do: spread
    wide (many neighbours, a soft temperature), the next item is predictable from what it resembles
    but rarely a pair seen before, which embeddings learn and pair counts cannot. With space
    "latent" the neighbours are the items nearest on the log's user x item factors: in real logs
    the next item is often one the same kind of users took, anywhere in their histories, without
    the two ever being taken a few steps apart."""
    w = np.maximum(w - knobs.discount, 0.0) / count[dst] ** knobs.damping
    keep = w > 0
    emp_src, emp_dst, emp_w = src[keep], dst[keep], _row_normalised(src[keep], w[keep], n_items)
    if knobs.smooth <= 0:
        return emp_src, emp_dst, emp_w
    if knobs.space in ("latent", "next"):
        out_f, in_f = latent.astype(np.float32), latent.astype(np.float32)   # each normalised in place below
    else:
        out_f, in_f = transition_factors(src, dst, np.ones(len(src)), n_items)
    # Cosine in the factor space: the norms of the factors grow with an item's degree, and the
    # quality term already makes popular items popular.
    out_f /= np.maximum(np.linalg.norm(out_f, axis=1, keepdims=True), 1e-12)
    in_f /= np.maximum(np.linalg.norm(in_f, axis=1, keepdims=True), 1e-12)
    s_src, s_dst, s_w = _nearest(out_f, in_f, min(knobs.neighbours, n_items - 1), knobs.temperature)
    if knobs.space == "next":
        s_src, s_dst, s_w = _composed(emp_src, emp_dst, emp_w, s_src, s_dst, s_w, n_items)
    has_emp = np.bincount(emp_src, minlength=n_items) > 0
    share = np.where(has_emp[s_src], knobs.smooth, 1.0)                              # an item with no pair: all smooth
    return (np.concatenate([emp_src, s_src]), np.concatenate([emp_dst, s_dst]),
            np.concatenate([(1 - knobs.smooth) * emp_w, share * s_w]))


def _nearest(out_f: np.ndarray, in_f: np.ndarray, k: int, temperature: float
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's k best targets by cosine, weighted exp((cos - 1) / temperature), rows summing to one."""
    n_items = len(out_f)
    s_src, s_dst, s_w = [], [], []
    for lo in range(0, n_items, 2048):
        score = out_f[lo:lo + 2048] @ in_f.T                                         # [b, I]
        rows = np.arange(lo, min(lo + 2048, n_items))
        score[rows - lo, rows] = -np.inf
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]                          # [b, k]
        val = np.take_along_axis(score, top, axis=1)
        s_src.append(np.repeat(rows, k))
        s_dst.append(top.reshape(-1))
        s_w.append(np.exp((val - 1.0) / temperature).reshape(-1))
    s_src, s_dst, s_w = np.concatenate(s_src), np.concatenate(s_dst), np.concatenate(s_w)
    ok = s_w > 0
    return s_src[ok], s_dst[ok], _row_normalised(s_src[ok], s_w[ok], n_items)


def _composed(e_src: np.ndarray, e_dst: np.ndarray, e_w: np.ndarray, s_src: np.ndarray, s_dst: np.ndarray,
              s_w: np.ndarray, n_items: int, keep: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E @ S: a leads to b (the log's pairs, in the log's direction), b resembles b' (S), so a leads
    to b'. Real transitions are directed (a cleanser before a toner far more often than after) and
    spread over items like the ones that follow: a sequence model generalises to such (a, b') it
    never saw, pair counting cannot. Items with no pair keep S's row; each row keeps its `keep`
    strongest targets, renormalised, to bound the kernel's size."""
    import scipy.sparse as sp

    e = sp.csr_matrix((e_w, (e_src, e_dst)), shape=(n_items, n_items))
    s = sp.csr_matrix((s_w, (s_src, s_dst)), shape=(n_items, n_items))
    m = (e @ s).tocoo()
    src, dst, w = m.row.astype(np.int64), m.col.astype(np.int64), m.data
    alone = np.bincount(e_src, minlength=n_items) == 0
    pick = alone[s_src]
    src, dst, w = (np.concatenate([src, s_src[pick]]), np.concatenate([dst, s_dst[pick]]),
                   np.concatenate([w, s_w[pick]]))
    keep_mask = src != dst
    src, dst, w = src[keep_mask], dst[keep_mask], w[keep_mask]
    order = np.lexsort((dst, -w, src))                       # strongest first within a row, ties by id
    src, dst, w = src[order], dst[order], w[order]
    first = np.searchsorted(src, src)                        # each row's first position
    top = np.arange(len(src)) - first < keep
    src, dst, w = src[top], dst[top], w[top]
    return src, dst, _row_normalised(src, w, n_items)


def fitted_scenario(arrays: dict[str, np.ndarray], knobs: Knobs, fitted: str, name: str = "beauty",
                    seed: int = 31, n_categories: int = 20, organic: float = 0.0) -> WorldConfig:
    """The scenario of a fitted world: sizes from the arrays, behaviour from the knobs; its clock
    starts where the log ends, and `organic` of its visits also take an item found on one's own."""
    return WorldConfig(
        name=name, seed=seed, latent_dim=arrays["item_latent"].shape[1], collab_dim=0, fitted=fitted,
        fit=FitConfig(popularity=knobs.popularity, smooth=knobs.smooth, damping=knobs.damping,
                      backward=knobs.backward, discount=knobs.discount, neighbours=knobs.neighbours,
                      temperature=knobs.temperature, space=knobs.space, n_categories=n_categories),
        users=UserConfig(n=len(arrays["user_taste"]), favourite_categories=1, activity="lognormal",
                         activity_sigma=round(float(np.log(arrays["user_activity"]).std()), 3)),
        items=ItemConfig(n=len(arrays["item_latent"]), n_categories=n_categories, subcategories=1),
        # Slates compete with what the user would find on their own, as in the small world.
        behavior=BehaviorConfig(relevance_scale=knobs.relevance, content_weight=1.0, outside="catalogue",
                                no_click_utility=-4.0, lifecycle=knobs.lifecycle, lifecycle_start=1.0,
                                organic=organic),
        sequence=SequenceConfig(weight=knobs.sequence, floor=knobs.floor, lag_decay=knobs.lag_decay,
                                repeat=knobs.repeat, memory=knobs.memory),
        traffic=TrafficConfig(sessions_per_user=1.0, requests_per_session=1.5),
        oracle=OracleConfig(sample_requests=2000),
    )


MATCHED = ("items", "last_in_top10_popular", "last_in_top50_popular", "top1pct_share", "last_in_top10_cooc",
           "last_in_top50_cooc", "last_pair_seen", "last_in_top50_taste", "last_in_top50_smooth",
           # How fast the past stops pointing at the next item, and how sharp fine taste and item
           # similarity are at the top: what separates a sequence model from pair counting.
           "lag3_in_top50_cooc", "lag6_in_top50_cooc", "last_in_top10_taste64", "last_in_top10_near64",
           # Time: where the held-out item sits in the log's sequences, and the items taken last.
           "last_lateness", "last_in_top10_tail_popular",
           # Direction: a world walked both ways hands symmetric item-CF what real logs give SASRec.
           "last_forward_only", "last_backward_only")
TIME = ("last_lateness", "last_in_top10_tail_popular")   # what the lifecycle stage matches
# The statistics nearest to what popularity and item-CF recall measure weigh more: a world can
# match a dozen statistics and still miss those two by half.
WEIGHT = {"last_in_top10_popular": 4.0, "last_in_top10_cooc": 4.0}


def simulate_organic(arrays: dict[str, np.ndarray], knobs: Knobs, lengths: np.ndarray, path: Path,
                     seed: int = 1) -> list[np.ndarray]:
    """Every user's sequence of organic choices in the world fitted with `knobs` (saved to `path`)."""
    from sim.organic import simulate_sequences
    from sim.state import initial_state
    from sim.world import make_world

    np.savez(path, **arrays)
    world = make_world(fitted_scenario(arrays, knobs, str(Path(path).resolve())), 0)
    return simulate_sequences(world, lengths, seed, initial_state(world))


def loss(real: dict[str, float], sim: dict[str, float], matched: tuple[str, ...] = MATCHED) -> float:
    """Squared log ratios of the matched statistics, each above a floor that keeps empty ones
    finite (lateness, a centred position that can reach 0 or below, above a wider one)."""
    def term(k: str) -> float:
        floor = 0.1 if k == "last_lateness" else 1e-3
        return np.log(max(sim.get(k, 0.0) + floor, 1e-3) / max(real[k] + floor, 1e-3)) ** 2
    return float(sum(WEIGHT.get(k, 1.0) * term(k) for k in matched))


class _Spent(Exception):
    """The search used its evaluations."""


@dataclass(frozen=True)
class Search:
    knobs: Knobs
    loss: float
    evaluations: list[dict[str, float]]   # every point tried: knobs, loss


def search(seqs: list[np.ndarray], n_items: int, workdir: Path, users: int = 8000, evaluations: int = 40,
           start: Knobs = Knobs(), seed: int = 0, log=print, lifecycle_evals: int = 6) -> Search:
    """The lifecycle on the time statistics alone (a bounded scalar search, `lifecycle_evals`
    points), then a grid around the start point and Nelder-Mead over log(popularity), log(floor),
    log(relevance), logit(smooth), on a random subset of users, each point simulated with the same
    draws (common random numbers keep it smoother); `evaluations` counts every point."""
    from scipy.optimize import minimize

    from sim.structure import k_core, structure

    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(len(seqs), size=min(users, len(seqs)), replace=False))
    # The world of each point is fitted to the subset alone and simulates exactly its users: a
    # world fitted to the whole log but run for a part of its users would be judged at the wrong
    # scale. Both logs are 5-core filtered, as the benchmark filters the simulated log.
    sub = [seqs[u] for u in subset]
    lengths = np.array([len(s) for s in sub])
    real = structure(k_core(sub), n_items)
    tried: list[dict[str, float]] = []
    workdir.mkdir(parents=True, exist_ok=True)

    def knobs_at(x: np.ndarray, base: Knobs) -> Knobs:
        return replace(base, popularity=float(np.exp(x[0])), floor=float(np.exp(x[1])),
                       relevance=float(np.exp(x[2])), smooth=float(1 / (1 + np.exp(-x[3]))))

    def evaluate(k: Knobs, matched: tuple[str, ...] = MATCHED) -> float:
        if len(tried) >= evaluations:
            raise _Spent
        arrays = fit_arrays(sub, n_items, k, seed=seed)
        kept = k_core(simulate_organic(arrays, k, lengths, workdir / f"search-{len(tried)}.npz"))
        st = structure(kept, n_items) if len(kept) > 10 else None
        value = loss(real, st) if st else 1e3                    # every point is recorded on the whole loss
        tried.append({"popularity": k.popularity, "floor": k.floor, "relevance": k.relevance,
                      "smooth": k.smooth, "lifecycle": k.lifecycle, "loss": value})
        (workdir / f"search-{len(tried) - 1}.npz").unlink()
        log(f"  calibration {len(tried):3d}: popularity {k.popularity:.3f} floor {k.floor:.2e} "
            f"relevance {k.relevance:.2f} smooth {k.smooth:.2f} lifecycle {k.lifecycle:.2f} -> loss {value:.4f}",
            flush=True)
        return value if matched is MATCHED or not st else loss(real, st, matched)

    # Time first, on its own statistics: how far the log's items move with its clock hardly
    # depends on the other knobs, and every later point then carries it.
    life, timed = start.lifecycle, []
    if lifecycle_evals:
        from scipy.optimize import minimize_scalar

        def on_time(b: float) -> float:
            timed.append((evaluate(replace(start, lifecycle=float(b)), TIME), float(b)))
            return timed[-1][0]
        try:
            on_time(0.0)                       # a log may carry no time: the bounded search never tries 0
            minimize_scalar(on_time, bounds=(0.0, 12.0), method="bounded",
                            options={"maxiter": lifecycle_evals - 1, "xatol": 0.3})
        except _Spent:
            pass
        life = min(timed)[1] if timed else life
    start = replace(start, lifecycle=life)

    def objective(x: np.ndarray) -> float:
        return evaluate(knobs_at(x, start))

    # A coarse grid first: logs differ most in how strongly one item leads to the next (floor)
    # and how concentrated popularity is; the simplex then refines around the best point.
    logit = float(np.log(start.smooth / (1 - start.smooth)))
    grid = [np.array([*np.log([start.popularity * p, start.floor * f, start.relevance]), logit + m])
            for f in (0.3, 1.0, 3.0) for p in (0.7, 1.4) for m in (-1.5, 1.5)]
    grid.insert(0, np.array([*np.log([start.popularity, start.floor, start.relevance]), logit]))
    values = []
    try:
        for x in grid:
            values.append(objective(x))
        x0 = grid[int(np.argmin(values))]
        simplex = x0 + np.vstack([np.zeros(4), np.diag([0.3, 0.7, 0.3, 1.0])])
        minimize(objective, x0, method="Nelder-Mead",
                 options={"initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-3})
    except _Spent:
        pass
    best = min(range(len(tried)), key=lambda i: tried[i]["loss"])
    b = tried[best]
    return Search(replace(start, popularity=b["popularity"], floor=b["floor"], relevance=b["relevance"],
                          smooth=b["smooth"], lifecycle=b["lifecycle"]), b["loss"], tried)


def polish(seqs: list[np.ndarray], n_items: int, knobs: Knobs, workdir: Path, replicas: int = 3,
           evaluations: int = 5, seed: int = 0, log=print) -> Search:
    """The popularity knob alone, on every user of the log and with the loss averaged over
    `replicas` simulated logs: the search's subset and single draw leave the share of next items
    among the most popular several tens of percent off on a small log (what popularity recall
    reads), and the world that is kept simulates the whole log. A bounded scalar search in log
    popularity within a factor 2 of the search's point, which is tried first and kept if nothing
    beats it; the same draws at every point."""
    from scipy.optimize import minimize_scalar

    from sim.structure import k_core, structure

    lengths = np.array([len(s) for s in seqs])
    real = structure(k_core(seqs), n_items)
    tried: list[dict[str, float]] = []
    workdir.mkdir(parents=True, exist_ok=True)

    def evaluate(x: float) -> float:
        if len(tried) >= evaluations:
            raise _Spent
        k = replace(knobs, popularity=float(np.exp(x)))
        arrays = fit_arrays(seqs, n_items, k, seed=seed)
        runs = [k_core(simulate_organic(arrays, k, lengths, workdir / "polish.npz", seed + 1 + r)) for r in range(replicas)]
        stats = [structure(r, n_items) for r in runs if len(r) > 10]
        mean = {m: float(np.mean([st[m] for st in stats])) for m in MATCHED} if len(stats) == len(runs) else None
        value = loss(real, mean) if mean else 1e3
        tried.append({"popularity": k.popularity, "loss": value,
                      "last_in_top10_popular": mean["last_in_top10_popular"] if mean else float("nan")})
        log(f"  polish {len(tried)}: popularity {k.popularity:.3f} -> loss {value:.4f} (last in top-10 popular "
            f"{tried[-1]['last_in_top10_popular']:.4f}, real {real['last_in_top10_popular']:.4f})", flush=True)
        return value

    x0 = float(np.log(knobs.popularity))
    try:
        evaluate(x0)
        minimize_scalar(evaluate, bounds=(x0 - np.log(2), x0 + np.log(2)), method="bounded",
                        options={"maxiter": max(evaluations - 1, 1), "xatol": 0.05})
    except _Spent:
        pass
    (workdir / "polish.npz").unlink(missing_ok=True)
    best = min(tried, key=lambda t: t["loss"])
    return Search(replace(knobs, popularity=best["popularity"]), best["loss"], tried)

