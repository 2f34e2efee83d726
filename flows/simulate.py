"""One simulated day: traffic meets the arms' pipelines, the world clicks, the lake records it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from components.ab import Assigner
from components.lake import MissingPartitionError
from components.features.store import FeatureStore, load_catalog
from components.ranking import RANKERS
from components.recall import CHANNELS
from components.serving import ArmConfig, Pipeline
from components.types import TrainData
from flows import progress
from flows.campaign_state import Campaign
from sim import behavior, effects
from sim.rng import stream
from sim.traffic import traffic
from sim.world import item_catalog, user_catalog

BOOTSTRAP_ARM = "logging"
BOOTSTRAP_EXPERIMENT = "bootstrap"


def publish_catalog(c: Campaign, day: int) -> dict[str, int]:
    """The world announces the items and users created on `day` to the recommender."""
    items, users = item_catalog(c.world), user_catalog(c.world)
    new_items = np.flatnonzero(items["created_day"] == day)
    new_users = np.flatnonzero(users["created_day"] == day)
    item_table = pa.table({
        "day": np.full(len(new_items), day, np.int32),
        "item_id": items["item_id"][new_items],
        "category": items["category"][new_items],
        "title": [items["title"][i] for i in new_items],
        "created_day": items["created_day"][new_items],
        "content": pa.array(list(items["content"][new_items]), type=pa.list_(pa.float32())),
    })
    user_table = pa.table({"day": np.full(len(new_users), day, np.int32),
                           **{k: v[new_users] for k, v in users.items()}})
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
    rankers = {r: RANKERS[r].load(models / r) for r in {a.ranker for a in arms.values()} - {"none"}}
    return {name: Pipeline(a, exp.slate_size, channels, rankers.get(a.ranker)) for name, a in arms.items()}


def serve_day(c: Campaign, day: int, pipelines: dict[str, Pipeline] | None = None) -> dict[str, float]:
    """Serve every request of `day`, draw the clicks; write requests, request_latency, impressions,
    world_daily.

    `pipelines` are the arms' pipelines (as the registry serves them); by default they are loaded
    from the campaign's models folder."""
    exp, world, seed = c.experiment, c.world, c.scenario.seed
    tr = traffic(world, day, stream(seed, day, "traffic"))
    experiment, arms = arms_of_day(c, day)
    if day == 0:
        assigned = np.full(len(tr.user_id), BOOTSTRAP_ARM, dtype=object)
        enrolled, layer = np.full(len(tr.user_id), experiment, dtype=object), BOOTSTRAP_EXPERIMENT
    else:
        a = Assigner([exp.allocation()], exp.holdout).assign(tr.user_id, exp.layer)
        assigned, enrolled, layer = a.arm, a.experiment, exp.layer
    store = FeatureStore.load(c.lake, day)
    if day == 0 or pipelines is None:
        pipelines = load_pipelines(c, day, arms)
    # Held-out users and users outside the experiment's buckets get what control serves.
    pipelines = dict(pipelines)
    for arm in sorted(set(assigned.tolist()) - set(pipelines)):
        pipelines[arm] = pipelines[exp.control]

    k, bs = exp.slate_size, exp.serve_batch_size
    slates = np.full((len(tr.user_id), k), -1, np.int64)
    scores = np.zeros((len(tr.user_id), k), np.float32)
    origin: list[list[tuple[str, ...]]] = [[] for _ in tr.user_id]
    stage_ms = {s: np.zeros(len(tr.user_id), np.float32) for s in ("recall", "merge", "rank", "total")}
    batch_size = np.zeros(len(tr.user_id), np.int32)
    batches = [(arm, idx[s:s + bs]) for arm in pipelines for idx in [np.flatnonzero(assigned == arm)]
               for s in range(0, len(idx), bs)]
    for arm, idx in progress.track(batches, len(batches), f"day {day}: serving {len(tr.user_id)} requests"):
        res = pipelines[arm].serve(store.user_batch(tr.user_id[idx], tr.request_id[idx]))
        slates[idx], scores[idx] = res.items, res.scores
        for j, row in zip(idx, res.channels):
            origin[j] = row
        for s, v in res.timings_ms.items():
            stage_ms[s][idx] = v
        batch_size[idx] = len(idx)

    shown = slates >= 0                                                              # [R, K]
    safe = np.where(shown, slates, 0)
    prob = behavior.click_probability(world, tr.user_id, safe) * shown               # [R, K]
    effect = c.scenario.effect
    prob = effects.favour(prob, assigned == effect.arm, effect.logit)                 # [R, K]
    clicked = stream(seed, day, "clicks").random(prob.shape) < prob
    ref = behavior.reference_ctr(world, tr.user_id, k)

    n = len(tr.user_id)
    c.lake.write("requests", day, pa.table({
        "day": np.full(n, day, np.int32), "ts": tr.ts, "request_id": tr.request_id, "user_id": tr.user_id,
        "experiment": enrolled.astype(str), "layer": [layer] * n, "arm": assigned.astype(str),
    }))
    c.lake.write("request_latency", day, pa.table({
        "day": np.full(n, day, np.int32), "request_id": tr.request_id, "arm": assigned.astype(str),
        "batch_size": batch_size, **{f"{s}_ms": v for s, v in stage_ms.items()},
    }))
    r, pos = np.nonzero(shown)
    c.lake.write("impressions", day, pa.table({
        "day": np.full(len(r), day, np.int32), "ts": tr.ts[r], "request_id": tr.request_id[r],
        "user_id": tr.user_id[r], "item_id": slates[r, pos], "position": pos.astype(np.int32),
        "arm": assigned[r].astype(str), "channels": [list(origin[i][p]) for i, p in zip(r, pos)],
        "score": scores[r, pos], "clicked": clicked[r, pos],
    }))
    rows = []
    for arm in pipelines:
        m = assigned == arm
        rows.append({"day": day, "arm": arm, "requests": int(m.sum()),
                     "ctr_expected": float(prob[m].sum() / max(shown[m].sum(), 1)),
                     "ctr_oracle": float(ref.oracle[m].mean()) if m.any() else 0.0,
                     "ctr_random": float(ref.random[m].mean()) if m.any() else 0.0})
    c.lake.write("world_daily", day, pa.Table.from_pylist(rows))
    return {f"{row['arm']}.{key}": row[key] for row in rows for key in row if key not in ("day", "arm")}
