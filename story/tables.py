"""The day's tables, laid out from its plan, what was served and the world's reference CTRs."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.contracts import STAGES
from components.features import consistency
from components.features.online import OnlineStoreConfig
from sim.behavior import Reference
from story.plan import DayPlan
from story.serve import STORE_COLUMNS, UPDATE_COLUMNS, ServedDay, channel_names

ONLINE_PREFIX = "online_store."   # the MLflow metrics of online_store_daily's row


def requests(plan: DayPlan) -> pa.Table:
    tr, n = plan.traffic, len(plan)
    return pa.table({
        "day": np.full(n, plan.day, np.int32), "ts": tr.ts, "request_id": tr.request_id, "user_id": tr.user_id,
        "experiment": plan.enrolled.astype(str), "layer": [plan.layer] * n, "arm": plan.assigned.astype(str),
    })


def request_latency(plan: DayPlan, served: ServedDay) -> pa.Table:
    return pa.table({
        "day": np.full(len(plan), plan.day, np.int32), "request_id": plan.traffic.request_id,
        "arm": plan.assigned.astype(str), "batch_size": served.batch_size,
        **{f"{s}_ms": served.stage_ms[:, i] for i, s in enumerate(STAGES)},
    })


def request_channel_latency(plan: DayPlan, served: ServedDay) -> pa.Table:
    names = np.asarray(channel_names(plan), dtype=object)
    req, ch = np.nonzero(np.isfinite(served.channel_ms))                        # request order, then channel
    return pa.table({
        "day": np.full(len(req), plan.day, np.int32), "request_id": plan.traffic.request_id[req],
        "arm": plan.assigned[req].astype(str), "channel": names[ch].astype(str), "ms": served.channel_ms[req, ch],
    })


def update_latency(plan: DayPlan, served: ServedDay) -> pa.Table:
    """The intra-day model updates of the day's incremental arms, one row each, in serving order."""
    u = {name: served.updates[:, i] for i, name in enumerate(UPDATE_COLUMNS)}
    arms = np.asarray(list(plan.arms), dtype=object)
    return pa.table({
        "day": np.full(len(served.updates), plan.day, np.int32), "arm": arms[u["arm"].astype(np.int64)].astype(str),
        **{k: u[k].astype(np.int64) for k in ("micro_batch", "impressions", "clicks")},
        **{k: u[k] for k in ("ranker_ms", "channels_ms", "total_ms")},
    })


def impressions(plan: DayPlan, served: ServedDay) -> pa.Table:
    tr = plan.traffic
    r, pos = np.nonzero(served.slates >= 0)
    channels, ranks = _channels(plan, served.origin[r, pos], served.ranks[r, pos], r)
    return pa.table({
        "day": np.full(len(r), plan.day, np.int32), "ts": tr.ts[r], "request_id": tr.request_id[r],
        "user_id": tr.user_id[r], "item_id": served.slates[r, pos], "position": pos.astype(np.int32),
        "arm": plan.assigned[r].astype(str), "channels": channels, "recall_ranks": ranks,
        "score": served.scores[r, pos], "clicked": served.clicked[r, pos],
    })


def organic(plan: DayPlan, served: ServedDay) -> pa.Table:
    """What users took on their own during their visits, stamped with the visit's time."""
    tr, r = plan.traffic, np.flatnonzero(served.organic >= 0)
    return pa.table({
        "day": np.full(len(r), plan.day, np.int32), "ts": tr.ts[r], "request_id": tr.request_id[r],
        "user_id": tr.user_id[r], "item_id": served.organic[r],
    })


def day_log(plan: DayPlan, served: ServedDay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every impression with its click and every organic take, in time order (a visit's organic
    take after its slate): user, item, clicked [N] each, what the world moves on from."""
    user = plan.traffic.user_id
    r, pos = (served.slates >= 0).nonzero()
    o = np.flatnonzero(served.organic >= 0)
    order = np.lexsort((np.concatenate([pos, np.full(len(o), served.slates.shape[1])]), np.concatenate([r, o])))
    return (np.concatenate([user[r], user[o]])[order], np.concatenate([served.slates[r, pos], served.organic[o]])[order],
            np.concatenate([served.clicked[r, pos], np.ones(len(o), bool)])[order])


def _channels(plan: DayPlan, origin: np.ndarray, ranks: np.ndarray, r: np.ndarray) -> tuple[pa.ListArray, pa.ListArray]:
    """The `channels` and `recall_ranks` columns: a slot's provenance bits name the channels of the
    arm whose pipeline served it, in that arm's config order, each with the item's rank in its list
    (`ranks` [N, C] over channel_names(plan)). Built from offsets, not a Python list per impression."""
    arms = list(plan.arms)
    vocab = channel_names(plan)
    width = max((len(cfg.channels) for cfg in plan.arms.values()), default=0)
    by = plan.served_by(plan.assigned[r])
    name = np.full((len(r), width), -1, np.int64)                                  # [N, C] vocab index or -1
    rank = np.full((len(r), width), -1, np.int32)
    for arm in arms:
        rows = np.flatnonzero(by == arm)
        for c, ch in enumerate(plan.arms[arm].channels):
            hit = rows[(origin[rows] >> c) & 1 == 1]
            name[hit, c] = vocab.index(ch)
            rank[hit, c] = ranks[hit, vocab.index(ch)]
    offsets = pa.array(np.concatenate([[0], np.cumsum((name >= 0).sum(axis=1))]).astype(np.int32))   # [N + 1]
    values = pa.array(vocab, pa.string()).take(pa.array(name[name >= 0]))              # row, then channel order
    return pa.ListArray.from_arrays(offsets, values), pa.ListArray.from_arrays(offsets, pa.array(rank[name >= 0]))


def features_online(plan: DayPlan, served: ServedDay) -> pa.Table:
    logged = served.logged
    return consistency.online_table(plan.day, plan.traffic.request_id[logged], served.slates[logged],
                                    served.log_x)


def world_daily(plan: DayPlan, served: ServedDay, sampled: np.ndarray, ref: Reference) -> pa.Table:
    """Per arm: the world's expected CTR of the served slates, and of the oracle's and random slates
    on the requests the oracle ran on (`sampled` [R]; `ref` holds their figures in order)."""
    n, assigned, shown = len(plan), plan.assigned, served.slates >= 0
    # The references are per shown item of each request's own slate length: weighted by it, an
    # arm's oracle is its best possible clicks per shown item, as ctr_expected is its actual.
    length = shown.sum(axis=1)                                                     # [R]
    oracle, random = np.zeros(n), np.zeros(n)
    oracle[sampled], random[sampled] = ref.oracle * length[sampled], ref.random * length[sampled]
    rows = []
    # The arms, then held-out and unenrolled users, who are served what control serves.
    for arm in [*plan.arms, *sorted(set(assigned.tolist()) - set(plan.arms))]:
        m, ms = assigned == arm, (assigned == arm) & sampled
        rows.append({"day": plan.day, "arm": arm, "requests": int(m.sum()),
                     # Rounded far below any reported digit: BLAS may split the world's matrix
                     # products differently from one process to another, and re-runs must be
                     # byte-identical.
                     "ctr_expected": round(float(served.prob[m].sum() / max(shown[m].sum(), 1)), 10),
                     "ctr_oracle": round(float(oracle[ms].sum() / max(length[ms].sum(), 1)), 10),
                     "ctr_random": round(float(random[ms].sum() / max(length[ms].sum(), 1)), 10)})
    return pa.Table.from_pylist(rows)


def online_store_daily(plan: DayPlan, served: ServedDay, cfg: OnlineStoreConfig) -> pa.Table | None:
    """The day's local cache tier and server round trips, summed over the shards that served from
    the server (kind redis); None when none did (embedded: no cache, no server, nothing to count).
    Percentiles pool every round trip of the day; null on a day without one (every lookup a hit)."""
    if not len(served.store_counts):
        return None
    total = dict(zip(STORE_COLUMNS, served.store_counts.sum(axis=0).tolist()))
    hits, misses, trips = total["hits"], total["misses"], total["round_trips"]
    ms = served.store_ms
    p50, p99 = (float(np.percentile(ms, q)) for q in (50, 99)) if len(ms) else (None, None)
    return pa.Table.from_pylist([{
        "day": plan.day, "shards": len(served.store_counts), "lookups": hits + misses, "hits": hits, "misses": misses,
        "hit_rate": hits / (hits + misses) if hits + misses else None, "round_trips": trips,
        "server_p50_ms": p50, "server_p99_ms": p99, "server_mean_ms": float(ms.mean()) if len(ms) else None,
        "cache_size": cfg.cache_size, "cache_ttl_s": cfg.cache_ttl_s}])


def online_metrics(table: pa.Table | None) -> dict[str, float]:
    """online_store_daily's row as MLflow metrics (`online_store.hit_rate`, ...); none when absent or null."""
    if table is None:
        return {}
    row = table.to_pylist()[0]
    return {f"{ONLINE_PREFIX}{k}": float(v) for k, v in row.items()
            if k not in ("day", "cache_size", "cache_ttl_s") and v is not None}
