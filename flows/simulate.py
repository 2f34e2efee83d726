"""One simulated day: traffic meets the arms' pipelines, the world clicks, the lake records it."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from components.ab import Assigner
from components.contracts import STAGES
from components.lake import MissingPartitionError
from components.features import consistency
from components.features.definitions import FEATURES
from components.features.store import FeatureStore, load_catalog, online_vectors
from components.features.stream import StreamProcessor
from components.ranking import RANKERS
from components.recall import CHANNELS
from components.serving import ArmConfig, Pipeline
from components.types import TrainData
from flows import progress
from flows.campaign_state import Campaign
from sim import behavior, effects
from sim.rng import shard_of, stream
from sim.state import DayLog, WorldState, advance, initial_state, load_state, save_state, state_path
from sim.traffic import Traffic, traffic
from sim.world import World, cached_world, item_catalog, user_catalog

BOOTSTRAP_ARM = "logging"
BOOTSTRAP_EXPERIMENT = "bootstrap"


def world_of(c: Campaign, day: int) -> World:
    """Every user and item that has arrived by `day`."""
    return cached_world(c.scenario, day)


def world_dir(c: Campaign) -> Path:
    """The world's own files (daily state, shard outputs): never read by the recommender."""
    return c.data_dir / "world"


def state_of(c: Campaign, day: int) -> WorldState:
    """The world as `day` starts: drawn fresh on day 0, otherwise what the day before left."""
    path = state_path(world_dir(c), day)
    if day == 0 and not path.is_file():
        save_state(initial_state(world_of(c, 0)), world_dir(c))
    elif not path.is_file():
        raise MissingPartitionError(f"day {day} starts from the world state that day {day - 1} left, and "
                                    f"{path} is missing; run the days in order")
    return load_state(world_dir(c), day)


def publish_catalog(c: Campaign, day: int) -> dict[str, int]:
    """The world announces the items and users arriving on `day` to the recommender."""
    state_of(c, day)    # the day's state must exist before shards read it in parallel
    world = world_of(c, day)
    items, users = item_catalog(world, day), user_catalog(world, day)
    content = items["content"]                                                   # [n, d]
    item_table = pa.table({
        "day": np.full(len(items["item_id"]), day, np.int32),
        **{k: items[k] for k in ("item_id", "category", "title", "created_day")},
        "content": pa.ListArray.from_arrays(np.arange(0, content.size + 1, content.shape[1], dtype=np.int32),
                                            content.reshape(-1)),
    })
    user_table = pa.table({"day": np.full(len(users["user_id"]), day, np.int32), **users})
    c.lake.write("items", day, item_table)
    c.lake.write("users", day, user_table)
    return {"items": item_table.num_rows, "users": user_table.num_rows}


def arms_of_day(c: Campaign, day: int) -> tuple[str, dict[str, ArmConfig]]:
    """Day 0 is served by the logging policy alone; later days by the experiment's arms."""
    if day == 0:
        return BOOTSTRAP_EXPERIMENT, {BOOTSTRAP_ARM: c.experiment.logging_policy}
    return c.experiment.name, dict(c.experiment.arms)


def require_models(c: Campaign, day: int) -> Path:
    """The models that serve `day`: trained on day - 1, which must have run."""
    models = c.models_dir(day - 1)
    if day > 0 and not models.is_dir():
        done = c.lake.days("ab_daily")
        raise MissingPartitionError(
            f"day {day} is served by the models trained on day {day - 1}, which are not in "
            f"{models.parent}; run the days in order (days with reports: {done or 'none'})"
        )
    return models


def load_pipelines(c: Campaign, day: int, arms: dict[str, ArmConfig]) -> dict[str, Pipeline]:
    """Pipelines serving `day`, from models trained on days <= day - 1 (fitted on nothing for day 0)."""
    exp = c.experiment
    if day == 0:
        empty = np.zeros(0, np.int64)
        data = TrainData(day=-1, catalog=load_catalog(c.lake, 0), click_user=empty, click_item=empty,
                         click_day=empty.astype(np.int32), click_ts=empty)
        channels = {n: CHANNELS[n](getattr(exp.models, n)).fit(data) for n in exp.logging_policy.channels}
        return {BOOTSTRAP_ARM: Pipeline(exp.logging_policy, exp.slate_size, channels, None)}
    models = require_models(c, day)
    needed = sorted({ch for a in arms.values() for ch in a.channels})
    channels = {n: CHANNELS[n].load(models / n) for n in needed}
    needed_rankers = {r for a in arms.values() for r in (a.fine_ranker, a.coarse)} - {"none"}
    rankers = {r: RANKERS[r].load(models / r) for r in needed_rankers}
    return {name: Pipeline(a, exp.slate_size, channels, rankers.get(a.fine_ranker), rankers.get(a.coarse))
            for name, a in arms.items()}


def channel_names(arms: dict[str, ArmConfig]) -> list[str]:
    """Every recall channel of the day's arms, in a fixed order: the columns of the shard files."""
    return sorted({ch for a in arms.values() for ch in a.channels})


class Day(NamedTuple):
    traffic: Traffic
    experiment: str
    arms: dict[str, ArmConfig]
    assigned: np.ndarray   # [R] arm of each request (or holdout / default)
    enrolled: np.ndarray   # [R] experiment each request counts for
    layer: str


def day_traffic(c: Campaign, day: int, state: WorldState) -> Day:
    """The day's requests and the arm of each; a pure function of the seed and the day's state."""
    tr = traffic(world_of(c, day), state, day, stream(c.scenario.seed, day, "traffic"))
    experiment, arms = arms_of_day(c, day)
    if day == 0:
        assigned = np.full(len(tr.user_id), BOOTSTRAP_ARM, dtype=object)
        enrolled, layer = np.full(len(tr.user_id), experiment, dtype=object), BOOTSTRAP_EXPERIMENT
    else:
        exp = c.experiment
        a = Assigner([exp.allocation()], exp.holdout).assign(tr.user_id, exp.layer)
        assigned, enrolled, layer = a.arm, a.experiment, exp.layer
    return Day(tr, experiment, arms, np.asarray(assigned, dtype=object), np.asarray(enrolled, dtype=object), layer)


def respond(c: Campaign, day: int, world: World, state: WorldState, tr: Traffic, slates: np.ndarray,
            favoured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The world's click probabilities [n, K] and clicks [n, K] for served slates; each request's
    draw is fixed by its id, so the clicks do not depend on how requests were batched."""
    prob = behavior.click_probability(world, state, tr.user_id, slates)            # [n, K]
    prob = effects.favour(prob, favoured, c.scenario.effect.logit)                 # [n, K]
    return prob, behavior.choose(prob, behavior.request_uniform(c.scenario.seed, day, tr.request_id))


def shard_path(c: Campaign, day: int, index: int, n_shards: int) -> Path:
    return world_dir(c) / f"shards-day={day:05d}" / f"shard-{index}-of-{n_shards}.npz"


def serve_shard(c: Campaign, day: int, index: int, n_shards: int,
                pipelines: dict[str, Pipeline] | None = None) -> str:
    """Serve the requests of one user-hash shard and draw their clicks; write them to a shard file.

    `pipelines` are the arms' pipelines (as the registry serves them); by default they are loaded
    from the campaign's models folder."""
    exp = c.experiment
    world, state = world_of(c, day), state_of(c, day)
    d = day_traffic(c, day, state)
    rows = np.flatnonzero(shard_of(d.traffic.user_id, n_shards) == index)        # [n] rows of the whole day
    tr, assigned, arms = d.traffic.select(rows), d.assigned[rows], d.arms
    store = FeatureStore.load(c.lake, day)
    if day == 0 or pipelines is None:
        pipelines = load_pipelines(c, day, arms)
    # Held-out users and users outside the experiment's buckets get what control serves.
    pipelines = dict(pipelines)
    for arm in sorted(set(assigned.tolist()) - set(pipelines)):
        pipelines[arm] = pipelines[exp.control]

    n, k, bs = len(rows), exp.slate_size, exp.serve_batch_size
    slates = np.full((n, k), -1, np.int64)
    scores = np.zeros((n, k), np.float32)
    origin = np.full((n, k), "", dtype=object)
    stage_ms = {s: np.zeros(n, np.float32) for s in STAGES}
    names = channel_names(arms)
    channel_ms = np.full((n, len(names)), np.nan, np.float32)                    # [n, C] NaN: not in the arm
    batch_size = np.zeros(n, np.int32)
    prob, clicked = np.zeros((n, k), np.float32), np.zeros((n, k), bool)
    log = consistency.logged(tr.request_id, exp.feature_log_rate)                  # [n]
    log_x = np.zeros((n, k, len(FEATURES)), np.float32)
    # Time-ordered micro-batches: every request of one is served, then the world answers them and
    # the stream processor takes their events, visible from the next micro-batch on.
    stream = StreamProcessor.for_day(c.lake, day)
    micro = tr.ts // stream.micro_batch_seconds                                    # [n]
    of_arm = {arm: assigned == arm for arm in pipelines}
    batches = [(m, arm, idx[s:s + bs]) for m in np.unique(micro).tolist() for arm in pipelines
               for idx in [np.flatnonzero(of_arm[arm] & (micro == m))] for s in range(0, len(idx), bs)]
    label = f"day {day}: serving {n} requests" + (f" (shard {index + 1}/{n_shards})" if n_shards > 1 else "")
    for i, (m, arm, idx) in enumerate(progress.track(batches, len(batches), label)):
        if i == 0 or batches[i - 1][0] != m:
            stream.close_until(m * stream.micro_batch_seconds)
        batch = store.user_batch(tr.user_id[idx], tr.request_id[idx], stream.lookup(tr.user_id[idx], tr.ts[idx]))
        res = pipelines[arm].serve(batch)
        slates[idx], scores[idx] = res.items, res.scores
        origin[idx] = [["|".join(slot) for slot in row] for row in res.channels]
        for s, v in res.timings_ms.items():
            stage_ms[s][idx] = v
        for ch, v in res.channel_ms.items():
            channel_ms[idx, names.index(ch)] = v
        batch_size[idx] = len(idx)
        if log[idx].any():
            log_x[idx[log[idx]]] = online_vectors(batch, res.items)[log[idx]]       # [m, K, F]
        if i + 1 == len(batches) or batches[i + 1][0] != m:
            done = np.flatnonzero(micro == m)
            prob[done], clicked[done] = respond(c, day, world, state, tr.select(done), slates[done],
                                                assigned[done] == c.scenario.effect.arm)
            r, pos = np.nonzero(slates[done] >= 0)
            stream.ingest(tr.user_id[done][r], tr.ts[done][r], clicked[done][r, pos])

    path = shard_path(c, day, index, n_shards)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, rows=rows, slates=slates, scores=scores, origin=origin.astype(str), batch_size=batch_size,
                 channel_ms=channel_ms, prob=prob, clicked=clicked, log=log, log_x=log_x,
                 **{f"{s}_ms": v for s, v in stage_ms.items()})
    tmp.replace(path)
    return str(path)


def finish_day(c: Campaign, day: int, n_shards: int) -> dict[str, float]:
    """Gather the shards in request order, write requests, impressions and world_daily, and move
    the world on to the next day; the tables do not depend on the number of shards."""
    state = state_of(c, day)
    tr, experiment, arms, assigned, enrolled, layer = day_traffic(c, day, state)
    n, k = len(tr.user_id), c.experiment.slate_size
    out = {"slates": np.full((n, k), -1, np.int64), "scores": np.zeros((n, k), np.float32),
           "origin": np.full((n, k), "", dtype=object), "batch_size": np.zeros(n, np.int32),
           "prob": np.zeros((n, k), np.float32), "clicked": np.zeros((n, k), bool),
           "log": np.zeros(n, bool), "log_x": np.zeros((n, k, len(FEATURES)), np.float32),
           "channel_ms": np.full((n, len(channel_names(arms))), np.nan, np.float32),
           **{f"{s}_ms": np.zeros(n, np.float32) for s in STAGES}}
    for index in range(n_shards):
        with np.load(shard_path(c, day, index, n_shards)) as z:
            for key in out:
                out[key][z["rows"]] = z[key]
    shutil.rmtree(shard_path(c, day, 0, n_shards).parent, ignore_errors=True)
    # The oracle runs here, once, in request order: BLAS results can differ in the last bits with
    # the shape of a batch, and the day's figures must not depend on how it was sharded.
    seed = c.scenario.seed
    sampled = behavior.oracle_sample(seed, day, tr.request_id, n, c.scenario.oracle.sample_requests)
    ref = behavior.reference_ctr(world_of(c, day), state, tr.user_id[sampled], k, tr.request_id[sampled], day)
    oracle, random = np.zeros(n), np.zeros(n)
    oracle[sampled], random[sampled] = ref.oracle, ref.random

    slates, prob, clicked = out["slates"], out["prob"], out["clicked"]
    shown = slates >= 0
    c.lake.write("requests", day, pa.table({
        "day": np.full(n, day, np.int32), "ts": tr.ts, "request_id": tr.request_id, "user_id": tr.user_id,
        "experiment": enrolled.astype(str), "layer": [layer] * n, "arm": assigned.astype(str),
    }))
    c.lake.write("request_latency", day, pa.table({
        "day": np.full(n, day, np.int32), "request_id": tr.request_id, "arm": assigned.astype(str),
        "batch_size": out["batch_size"],
        **{f"{s}_ms": out[f"{s}_ms"] for s in STAGES},
    }))
    names = channel_names(arms)
    req, ch = np.nonzero(np.isfinite(out["channel_ms"]))                         # request order, then channel
    c.lake.write("request_channel_latency", day, pa.table({
        "day": np.full(len(req), day, np.int32), "request_id": tr.request_id[req],
        "arm": assigned[req].astype(str), "channel": np.asarray(names, dtype=object)[ch].astype(str),
        "ms": out["channel_ms"][req, ch],
    }))
    r, pos = np.nonzero(shown)
    c.lake.write("impressions", day, pa.table({
        "day": np.full(len(r), day, np.int32), "ts": tr.ts[r], "request_id": tr.request_id[r],
        "user_id": tr.user_id[r], "item_id": slates[r, pos], "position": pos.astype(np.int32),
        "arm": assigned[r].astype(str), "channels": [o.split("|") if o else [] for o in out["origin"][r, pos]],
        "score": out["scores"][r, pos], "clicked": clicked[r, pos],
    }))
    logged = out["log"]
    c.lake.write("features_online", day, consistency.online_table(
        day, tr.request_id[logged], slates[logged], out["log_x"][logged]))
    rows = []
    # The arms, then held-out and unenrolled users, who are served what control serves.
    for arm in [*arms, *sorted(set(assigned.tolist()) - set(arms))]:
        m, ms = assigned == arm, (assigned == arm) & sampled
        rows.append({"day": day, "arm": arm, "requests": int(m.sum()),
                     # Rounded far below any reported digit: BLAS may split the world's matrix
                     # products differently from one process to another, and re-runs must be
                     # byte-identical.
                     "ctr_expected": round(float(prob[m].sum() / max(shown[m].sum(), 1)), 10),
                     "ctr_oracle": round(float(oracle[ms].mean()), 10) if ms.any() else 0.0,
                     "ctr_random": round(float(random[ms].mean()), 10) if ms.any() else 0.0})
    c.lake.write("world_daily", day, pa.Table.from_pylist(rows))
    log = DayLog(user_id=tr.user_id[r], item_id=slates[r, pos], clicked=clicked[r, pos])
    save_state(advance(world_of(c, day + 1), state, log), world_dir(c))
    return {f"{row['arm']}.{key}": row[key] for row in rows for key in row if key not in ("day", "arm")}


def serve_day(c: Campaign, day: int) -> dict[str, float]:
    """Serve every request of `day` in-process, draw the clicks, write the day's tables."""
    serve_shard(c, day, 0, 1)
    return finish_day(c, day, 1)
