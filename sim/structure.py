"""The structure of a sequential log: what recommenders learn from, measured on the log itself.

Each statistic holds the last event of every sequence out, as the leave-one-out protocol does,
and asks how predictable it is from the rest of the log: from item popularity, from the item
before it through co-occurrence counted on the held-in part, from the user's own past (repeats).
The same numbers on a real and a simulated log say whether the world has the real log's structure.
"""
from __future__ import annotations

import numpy as np

WINDOW = 3   # positions either side that count as co-occurring (the data README's item-CF window)
LAGS = (3, 6)   # the item this many positions before the one before the held-out event


def to_pairs(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, item, position) of every event: [N] each."""
    users = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
    pos = np.concatenate([np.arange(len(s)) for s in seqs]) if seqs else np.zeros(0, np.int64)
    return users, items, pos


def k_core(seqs: list[np.ndarray], k: int = 5) -> list[np.ndarray]:
    """Drop items taken fewer than k times and users with fewer than k events, until none is left."""
    seqs = [np.asarray(s, np.int64) for s in seqs]
    while True:
        n = max((int(s.max()) for s in seqs if len(s)), default=-1) + 1
        counts = np.bincount(np.concatenate(seqs), minlength=n) if n else np.zeros(0, np.int64)
        kept = [s[counts[s] >= k] for s in seqs]
        kept = [s for s in kept if len(s) >= k]
        if sum(map(len, kept)) == sum(map(len, seqs)):
            return kept
        seqs = kept


def cooccurrence(seqs: list[np.ndarray], n_items: int, window: int = WINDOW,
                 forward: float = 1.0, backward: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of items at most `window` positions apart in a sequence: (src, dst, count), summed.

    A pair (a then b, d positions later) counts `forward / d` towards a -> b and `backward / d`
    towards b -> a."""
    src, dst, w = [], [], []
    for d in range(1, window + 1):
        a = np.concatenate([s[:-d] for s in seqs if len(s) > d] or [np.zeros(0, np.int64)])
        b = np.concatenate([s[d:] for s in seqs if len(s) > d] or [np.zeros(0, np.int64)])
        src += [a, b]
        dst += [b, a]
        w += [np.full(len(a), forward / d), np.full(len(a), backward / d)]
    src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
    keep = (src != dst) & (w > 0)
    keys = src[keep] * n_items + dst[keep]
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq // n_items, uniq % n_items, np.bincount(inv, weights=w[keep], minlength=len(uniq))


def lateness(seqs: list[np.ndarray], n_items: int, shrink: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each item's mean relative position in the sequences that hold it, minus 1/2: [I] float, and
    whether it occurs at all (in a sequence of two events or more) [I] bool.

    A log without timestamps still runs in time (a user's sequence is in order, and users overlap
    in time), so an item of late catalogue sits late in sequences. `shrink` pulls each mean towards
    0 by its count (empirical Bayes: one position's noise against the spread of the items' means),
    so a rare item's few positions do not pass for a time of its own."""
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        return np.zeros(n_items), np.zeros(n_items, bool)
    items = np.concatenate(seqs)
    rel = np.concatenate([np.arange(len(s)) / (len(s) - 1.0) for s in seqs]) - 0.5
    count = np.bincount(items, minlength=n_items).astype(float)
    total = np.bincount(items, weights=rel, minlength=n_items)
    seen = count > 0
    mean = np.where(seen, total / np.maximum(count, 1), 0.0)
    if not shrink:
        return mean, seen
    noise = float(rel.var())                                   # one position's variance (~1/12)
    signal = max(float(np.average(mean[seen] ** 2, weights=count[seen]))
                 - noise * float(seen.sum()) / float(count[seen].sum()), 0.0)
    prior = noise / signal if signal > 0 else np.inf
    return np.where(seen, total / (count + prior), 0.0), seen


def _top_neighbours(src: np.ndarray, dst: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each source's k strongest targets, as sorted keys (src * n + dst) and ranks 0..k-1."""
    order = np.lexsort((dst, -w, src))
    s = src[order]
    rank = np.arange(len(s)) - np.searchsorted(s, s)
    keep = rank < k
    return order[keep], rank[keep]


def structure(seqs: list[np.ndarray], n_items: int, ks: tuple[int, ...] = (10, 50)) -> dict[str, float]:
    """Statistics of a log of time-ordered sequences (0-based item ids), the last event held out."""
    seqs = [np.asarray(s, np.int64) for s in seqs if len(s) >= 2]
    if not seqs:
        raise ValueError("the log has no sequence of two events or more")
    held = [s[:-1] for s in seqs]
    last = np.array([s[-1] for s in seqs])
    before = np.array([s[-2] for s in seqs])
    lengths = np.array([len(s) for s in seqs])
    out = {"users": float(len(seqs)), "items": float(len(np.unique(np.concatenate(seqs)))),
           "events": float(lengths.sum()), "length_mean": float(lengths.mean()),
           "length_median": float(np.median(lengths)), "length_p90": float(np.quantile(lengths, 0.9))}
    # Repeats: an event whose item the user took before.
    rep = sum(len(s) - len(np.unique(s)) for s in seqs)
    out["repeat_rate"] = rep / float(lengths.sum())
    out["last_is_repeat"] = float(np.mean([s[-1] in set(s[:-1].tolist()) for s in seqs]))
    # Popularity: is the held-out item among the k most taken items of the held-in log?
    counts = np.bincount(np.concatenate(held), minlength=n_items)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(n_items, np.int64)
    rank[order] = np.arange(n_items)
    for k in ks:
        out[f"last_in_top{k}_popular"] = float(np.mean(rank[last] < k))
    # Drift: is the held-out item among the k items most often taken last in the held-in part?
    # Real logs run in time: the end of every sequence is late, so what is taken at the ends
    # predicts the held-out event better than all-time popularity; a world without time does not.
    tail = np.bincount(np.array([s[-1] for s in held]), minlength=n_items)
    tail_rank = np.empty(n_items, np.int64)
    tail_rank[np.argsort(-tail, kind="stable")] = np.arange(n_items)
    out["last_in_top10_tail_popular"] = float(np.mean(tail_rank[last] < 10))
    # The same drift, item by item: where in the held-in sequences the held-out item sits (its mean
    # relative position, centred; 0 for an item of no particular time). Without time it is ~0.
    late, seen = lateness(held, n_items, shrink=False)
    out["last_lateness"] = float(late[last][seen[last]].mean()) if seen[last].any() else 0.0
    top1 = counts[order[: max(n_items // 100, 1)]].sum() / max(counts.sum(), 1)
    out["top1pct_share"] = float(top1)
    c = np.sort(counts)[::-1].astype(float)
    out["gini"] = float(1 - 2 * np.sum(np.cumsum(c[::-1]) / c.sum()) / n_items + 1 / n_items) if c.sum() else 0.0
    # Sequence: is the held-out item among the k strongest co-occurring items of the item before it?
    src, dst, w = cooccurrence(held, n_items)
    keep, nrank = _top_neighbours(src, dst, w, max(ks))
    keys = src[keep] * n_items + dst[keep]
    sort = np.argsort(keys)
    keys, nrank = keys[sort], nrank[sort]
    q = before * n_items + last
    pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
    found = (keys[pos] == q) if len(keys) else np.zeros(len(q), bool)
    for k in ks:
        out[f"last_in_top{k}_cooc"] = float(np.mean(found & (nrank[pos] < k)))
    # How often the held-out step is a pair the held-in log has seen at all: a world whose users
    # only retrace counted pairs gives counting methods an edge real logs do not.
    out["last_pair_seen"] = float(np.mean(_contains(np.sort(src * n_items + dst), q)))
    out["last_is_rare"] = float(np.mean(counts[last] < 3))
    # Direction: the held-out step's pair seen (within the window) only in this order, or only in
    # the reverse one. Real purchase logs are directed; symmetric counting cannot tell, SASRec can.
    f_src, f_dst, _ = cooccurrence(held, n_items, backward=0.0)
    fwd = f_src * n_items + f_dst                                                   # sorted: unique keys
    seen_fw = _contains(fwd, before * n_items + last)
    seen_bw = _contains(fwd, last * n_items + before)
    out["last_forward_only"] = float(np.mean(seen_fw & ~seen_bw))
    out["last_backward_only"] = float(np.mean(seen_bw & ~seen_fw))
    # How far back the past still points at the held-out item: a sequence model reads the whole
    # history, item-CF the last few items, so a log whose dependence fades slowly favours the former.
    for lag in LAGS:
        long = np.array([len(s) > lag + 1 for s in seqs])
        q = np.array([s[-2 - lag] if len(s) > lag + 1 else 0 for s in seqs]) * n_items + last
        pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
        hit = (keys[pos] == q) & (nrank[pos] < max(ks)) if len(keys) else np.zeros(len(q), bool)
        out[f"lag{lag}_in_top{max(ks)}_cooc"] = float(np.mean(hit[long])) if long.any() else 0.0
    out.update(_taste(held, last, n_items, ks))
    emb64 = _embedding(held, n_items, 64)          # one SVD for both the 64-axis taste and item similarity
    out.update(_taste(held, last, n_items, ks, name="taste64", emb=emb64))
    out.update(_smooth(held, before, last, n_items, ks))
    out.update(_near(held, before, last, ks, emb64))
    return out


def _contains(sorted_keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(q), bool)
    at = np.minimum(np.searchsorted(sorted_keys, q), len(sorted_keys) - 1)
    return sorted_keys[at] == q


def transition_factors(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n_items: int,
                       dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Low-rank factors of the degree-normalised co-occurrence matrix: out [I, k], in [I, k], so
    that out[i] @ in[j] says how strongly i leads to j, also for pairs never seen together."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    m = sp.csr_matrix((w, (src, dst)), shape=(n_items, n_items))
    deg = np.asarray(m.sum(axis=1)).ravel() + 1.0
    m = sp.diags(deg ** -0.5) @ m @ sp.diags(deg ** -0.5)
    k = int(min(dim, n_items - 2))
    u, sv, vt = svds(m.astype(np.float64), k=k, random_state=0)
    return (u * np.sqrt(sv)).astype(np.float32), (vt.T * np.sqrt(sv)).astype(np.float32)


def _smooth(held: list[np.ndarray], before: np.ndarray, last: np.ndarray, n_items: int, ks: tuple[int, ...],
            chunk: int = 2048) -> dict[str, float]:
    """Is the held-out item among the k best next items of the one before it by low-rank
    co-occurrence (items the user took removed)? Transition structure that generalises across
    similar items, which a sequence model learns and plain co-occurrence counting cannot."""
    src, dst, w = cooccurrence(held, n_items)
    if n_items < 4 or len(src) == 0:
        return {f"last_in_top{k}_smooth": 0.0 for k in ks}
    out_f, in_f = transition_factors(src, dst, w, n_items)
    return _hit_rates(lambda rows: out_f[before[rows]] @ in_f.T, held, last, ks, "smooth", chunk)


def _embedding(held: list[np.ndarray], n_items: int, dim: int) -> np.ndarray:
    """Items on the held-in log's leading singular vectors: [I, d] (fewer axes on a small log)."""
    from sim.calibrate import Log, item_embedding
    users, items, _ = to_pairs(held)
    dim = max(1, min(dim, n_items - 1, len(held) - 1))
    return item_embedding(Log(users, items), dim=dim, n_items=n_items).astype(np.float32)


def _taste(held: list[np.ndarray], last: np.ndarray, n_items: int, ks: tuple[int, ...],
           dim: int = 16, chunk: int = 2048, name: str = "taste", emb: np.ndarray | None = None) -> dict[str, float]:
    """Is the held-out item among the k nearest to the user's past, on the held-in log's leading
    singular vectors (items the user took removed)? The low-rank taste a factor model learns."""
    users, items, _ = to_pairs(held)
    emb = _embedding(held, n_items, dim) if emb is None else emb                     # [I, d]
    profile = np.zeros((len(held), emb.shape[1]), np.float32)
    np.add.at(profile, users, emb[items])
    return _hit_rates(lambda rows: profile[rows] @ emb.T, held, last, ks, name, chunk)


def _near(held: list[np.ndarray], before: np.ndarray, last: np.ndarray, ks: tuple[int, ...],
          emb: np.ndarray, chunk: int = 2048) -> dict[str, float]:
    """Is the held-out item among the k nearest to the item before it on the held-in log's 64
    leading singular vectors (items the user took removed)? Items taken by the same kind of users,
    anywhere in their histories: the item-to-item similarity a sequence model's embeddings learn
    even for pairs never taken a few steps apart."""
    return _hit_rates(lambda rows: emb[before[rows]] @ emb.T, held, last, ks, "near64", chunk)


def _hit_rates(score, held: list[np.ndarray], last: np.ndarray, ks: tuple[int, ...], name: str,
               chunk: int) -> dict[str, float]:
    """Share of users whose held-out item ranks in the top k of `score(rows) -> [b, I]`, the items
    they took removed (ties count against the target)."""
    users, items, _ = to_pairs(held)
    hits = {k: 0 for k in ks}
    for lo in range(0, len(held), chunk):
        rows = np.arange(lo, min(lo + chunk, len(held)))
        s = score(rows)                                                              # [b, I]
        took = np.flatnonzero((users >= lo) & (users < lo + chunk))
        s[users[took] - lo, items[took]] = -np.inf
        t = s[np.arange(len(s)), last[rows]]
        rank = (s > t[:, None]).sum(axis=1)
        for k in ks:
            hits[k] += int(np.sum(rank < k))
    return {f"last_in_top{k}_{name}": hits[k] / len(held) for k in ks}
