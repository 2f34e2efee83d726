"""Serving a day's requests: time-ordered micro-batches, the world's answer, the stream's visibility rule."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from components.contracts import STAGES
from components.features import consistency, online
from components.features.definitions import FEATURES
from components.features.store import online_vectors
from components.features.stream import Bus, ItemStream, MemoryBus, StreamProcessor
from components.serving import Pipeline, ServeResult
from components.serving.incremental import updaters_of
from sim import behavior
from sim.organic import visit_takes
from story.campaign import Campaign
from story.plan import DayPlan
from story.world import state_of, world_of

T = TypeVar("T")
UPDATE_COLUMNS = ("micro_batch", "arm", "impressions", "clicks", "ranker_ms", "channels_ms", "total_ms")
STORE_COLUMNS = ("hits", "misses", "round_trips")
Track = Callable[[Iterable[T], int, str], Iterator[T]]


def quietly(items: Iterable[T], total: int, text: str) -> Iterator[T]:
    """The default progress report: none."""
    yield from items


def channel_names(plan: DayPlan) -> list[str]:
    """Every recall channel of the day's arms, in a fixed order: the columns of `channel_ms`."""
    return sorted({ch for a in plan.arms.values() for ch in a.channels})


@dataclass
class ServedDay:
    """What serving and the world gave a set of the day's requests, row-aligned with `rows` of its plan."""

    rows: np.ndarray         # [n] rows of the day's plan
    slates: np.ndarray       # [n, K] int64, -1 for an empty slot
    scores: np.ndarray       # [n, K] float32
    origin: np.ndarray       # [n, K] int64 provenance bitmask over the serving arm's channels (ServeResult.origin)
    ranks: np.ndarray        # [n, K, C] int32 the item's rank in each of channel_names(plan)'s lists, -1 none
    stage_ms: np.ndarray     # [n, S] float32, S = contracts.STAGES
    channel_ms: np.ndarray   # [n, C] float32, C = channel_names(plan); NaN: not in the request's arm
    batch_size: np.ndarray   # [n] int32: requests in the micro-batch that served it
    prob: np.ndarray         # [n, K] float32, the world's click probability
    clicked: np.ndarray      # [n, K] bool
    organic: np.ndarray      # [n] int64: the item the user also took on their own during the visit, -1 none
    logged: np.ndarray       # [n] bool: its feature vectors go to features_online
    log_x: np.ndarray        # [m, K, F] float32, the vectors of the m logged rows, in row order (the
                             # 5 % logged: a dense [n, K, F] was the largest array of a served day)
    # [u, 7] float64, one row per intra-day model update (not row-aligned): micro-batch, arm (index in
    # the plan's arms), impressions, clicks, ranker ms, channels ms, total ms
    updates: np.ndarray
    # The online store's server path (kind redis; no rows when embedded, nothing to count there):
    # [s, 3] int64 per shard served from it, STORE_COLUMNS of its local cache tier; [t] float64
    # the wall-clock ms of each of its server round trips, in serving order (not row-aligned).
    store_counts: np.ndarray
    store_ms: np.ndarray

    @classmethod
    def empty(cls, rows: np.ndarray, slate_size: int, n_channels: int, logged: np.ndarray | None = None) -> ServedDay:
        """Nothing served yet; `logged` [n] marks the rows whose vectors will be kept (none when omitted)."""
        n, k = len(rows), slate_size
        logged = np.zeros(n, bool) if logged is None else np.asarray(logged, bool)
        return cls(rows=rows, slates=np.full((n, k), -1, np.int64), scores=np.zeros((n, k), np.float32),
                   origin=np.zeros((n, k), np.int64), ranks=np.full((n, k, n_channels), -1, np.int32), stage_ms=np.zeros((n, len(STAGES)), np.float32),
                   channel_ms=np.full((n, n_channels), np.nan, np.float32), batch_size=np.zeros(n, np.int32),
                   prob=np.zeros((n, k), np.float32), clicked=np.zeros((n, k), bool),
                   organic=np.full(n, -1, np.int64),
                   logged=logged, log_x=np.zeros((int(logged.sum()), k, len(FEATURES)), np.float32),
                   updates=np.zeros((0, len(UPDATE_COLUMNS)), np.float64),
                   store_counts=np.zeros((0, len(STORE_COLUMNS)), np.int64), store_ms=np.zeros(0, np.float64))

    def put(self, idx: np.ndarray, res: ServeResult, channels: list[str]) -> None:
        """Record one served micro-batch, rows `idx` of this set."""
        self.slates[idx], self.scores[idx], self.origin[idx] = res.items, res.scores, res.origin
        for c, ch in enumerate(res.channel_names):
            self.ranks[idx, :, channels.index(ch)] = res.ranks[:, :, c]
        self.stage_ms[idx] = [res.timings_ms[s] for s in STAGES]
        for ch, v in res.channel_ms.items():
            self.channel_ms[idx, channels.index(ch)] = v
        self.batch_size[idx] = len(idx)

    def save(self, path: Path) -> None:
        """For a shard served in another process: every field, under its own name."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{x.name: getattr(self, x.name) for x in fields(self)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ServedDay:
        with np.load(path) as z:
            return cls(**{x.name: z[x.name] for x in fields(cls)})

    @classmethod
    def gather(cls, parts: Iterable[ServedDay], n: int, slate_size: int, n_channels: int) -> ServedDay:
        """The parts (shards) of a day in request order: rows 0..n-1 of its plan."""
        parts = list(parts)
        logged = np.zeros(n, bool)
        for part in parts:
            logged[part.rows] = part.logged
        out = cls.empty(np.arange(n), slate_size, n_channels, logged)
        slot = np.cumsum(logged) - 1                                                   # [n] row -> log_x row
        for part in parts:
            for x in fields(cls):
                if x.name == "log_x":
                    out.log_x[slot[part.rows[part.logged]]] = part.log_x
                elif x.name in ("updates", "store_counts", "store_ms"):
                    setattr(out, x.name, np.concatenate([getattr(out, x.name), getattr(part, x.name)]))
                elif x.name != "rows":
                    getattr(out, x.name)[part.rows] = getattr(part, x.name)
        return out


def serve_rows(c: Campaign, plan: DayPlan, rows: np.ndarray, pipelines: Mapping[str, Pipeline],
               track: Track = quietly, label: str = "", bus: Bus | None = None, shard: int = 0) -> ServedDay:
    """Serve rows `rows` of the day's plan with the arms' pipelines and draw the world's clicks.

    Time-ordered micro-batches: every request of one is served, then the world answers them and the
    stream processor takes their events, visible from the next micro-batch on (the samples' SQL
    applies the same rule). Item counts are every shard's: this one is shard `shard` on `bus`
    (the default: the only one). Each request's click draw is fixed by its id, so neither sharding
    nor batching changes a click.
    """
    exp, day = c.experiment, plan.day
    world, state = world_of(c, day), state_of(c, day)
    tr, assigned = plan.traffic.select(rows), plan.assigned[rows]
    served_by = plan.served_by(assigned)
    store = online.open_store(c.lake, day, tr.user_id, exp.online_store)           # this shard's users
    names = channel_names(plan)
    out = ServedDay.empty(rows, exp.slate_size, len(names), consistency.logged(tr.request_id, exp.feature_log_rate))
    slot = np.cumsum(out.logged) - 1                                                  # [n] row -> log_x row
    stream = StreamProcessor.for_day(c.lake, day)
    items = ItemStream.for_day(c.lake, day, store.items.catalog.n_items, bus or MemoryBus(), shard)
    micro = tr.ts // stream.micro_batch_seconds                                    # [n]
    # The order of arms within a micro-batch is fixed (the arms, then holdout and unenrolled
    # users, served by control's pipeline in batches of their own), so a re-run serves the same batches.
    groups = [*plan.arms, *sorted(set(assigned.tolist()) - set(plan.arms))]
    of_group = {g: assigned == g for g in groups}
    bs = exp.serve_batch_size
    batches = [(m, g, idx[s:s + bs]) for m in np.unique(micro).tolist() for g in groups
               for idx in [np.flatnonzero(of_group[g] & (micro == m))] for s in range(0, len(idx), bs)]
    uniform = behavior.request_uniform(c.scenario.seed, day, tr.request_id)       # [n]
    favoured = assigned == c.scenario.effect.arm                                     # [n]
    # Incremental arms learn from the micro-batches already answered (components/serving/incremental.py).
    updaters, answered, updates = updaters_of(plan.arms, pipelines), [], []
    for i, (m, g, idx) in enumerate(track(batches, len(batches), label or f"day {day}: serving {len(rows)} requests")):
        if i == 0 or batches[i - 1][0] != m:
            stream.close_until(m * stream.micro_batch_seconds)
            now = replace(store.items, columns={**store.items.columns, **items.open(m)})
            for arm, up in updaters.items():
                if (t := up.before(m)) is not None:
                    updates.append([t.micro_batch, list(plan.arms).index(arm), t.impressions, t.clicks,
                                    t.ranker_ms, t.channels_ms, t.total_ms])
        batch = store.user_batch(tr.user_id[idx], tr.request_id[idx], stream.lookup(tr.user_id[idx], tr.ts[idx]), now)
        res = pipelines[served_by[idx[0]]].serve(batch)
        out.put(idx, res, names)
        log = out.logged[idx]
        x = online_vectors(batch, res.items, {ch: res.ranks[:, :, c] for c, ch in enumerate(res.channel_names)}) \
            if updaters or log.any() else None                                         # [B, K, F]
        if log.any():
            out.log_x[slot[idx[log]]] = x[log]
        if updaters:
            answered.append((idx, batch, res.items, x))
        if i + 1 == len(batches) or batches[i + 1][0] != m:
            done = np.flatnonzero(micro == m)
            answer = behavior.respond(world, state, tr.user_id[done], out.slates[done], uniform[done], favoured[done])
            out.prob[done], out.clicked[done] = answer
            out.organic[done] = visit_takes(world, state, tr.user_id[done], tr.request_id[done], day)
            r, pos = np.nonzero(out.slates[done] >= 0)
            stream.ingest(tr.user_id[done][r], tr.ts[done][r], out.clicked[done][r, pos])
            items.publish(m, out.slates[done][r, pos], out.clicked[done][r, pos])
            for idx_, batch_, items_, x_ in answered:
                for up in updaters.values():
                    up.observe(batch_, items_, x_, out.clicked[idx_])
            answered = []
    items.finish()
    if updates:
        out.updates = np.asarray(updates, np.float64)
    if isinstance(store, online.ServerStore):
        out.store_counts = np.array([[store.hits, store.misses, store.round_trips]], np.int64)
        out.store_ms = np.asarray(store.server_ms, np.float64)
    return out
