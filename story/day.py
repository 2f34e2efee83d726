"""One simulated day, from traffic to tables: plan, serve (whole or in shards), finish.

In one process: `run_day`. Across processes (flows/scale.py sends shards to a task runner):
`plan_to_file`, then `serve_shard_to_file` per shard, then `finish_from_files`; the tables do not
depend on the number of shards. The shards of a day serve side by side: each waits, micro-batch by
micro-batch, for the others' item events (the online store's bus).
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from common.typedconf import ConfigError
from components.features import online
from components.serving import Pipeline
from sim import behavior
from sim.state import DayLog, advance, save_state
from story import tables
from story.campaign import Campaign
from story.models import pipelines_from_folder
from story.plan import DayPlan, plan_day
from story.serve import ServedDay, Track, channel_names, quietly, serve_rows
from story.world import state_of, world_of


def serve_shard(c: Campaign, plan: DayPlan, index: int, n_shards: int,
                pipelines: Mapping[str, Pipeline] | None = None, track: Track = quietly) -> ServedDay:
    """Serve the requests of one user-hash shard; `pipelines` default to the campaign's models folder
    (flows pass the registry's)."""
    incremental = [a for a, cfg in plan.arms.items() if cfg.incremental.enabled]
    if incremental and n_shards > 1:
        raise ConfigError(f"arm {incremental[0]} of experiment {c.experiment.name} updates its models within the "
                          f"day from the whole stream, which {n_shards} shards would each see a part of (the day "
                          f"would depend on the shard count); serve it in one shard")
    if pipelines is None:
        pipelines = pipelines_from_folder(c, plan.day, plan.arms)
    shard = f" (shard {index + 1}/{n_shards})" if n_shards > 1 else ""
    rows = plan.shard_rows(index, n_shards)
    bus = online.open_bus(c.lake, plan.day, c.experiment.online_store, n_shards,
                          _plan_path(c, plan.day).with_name("stream"))
    return serve_rows(c, plan, rows, pipelines, track, f"day {plan.day}: serving {len(rows)} requests{shard}",
                      bus, index)


def finish_day(c: Campaign, plan: DayPlan, served: ServedDay) -> dict[str, float]:
    """Write the day's tables, move the world on to the next day; returns the world's figures per arm
    (`<arm>.<figure>`) and, served from the online store's server, its cache's (`online_store.*`)."""
    day, n, k = plan.day, len(plan), c.experiment.slate_size
    state, tr = state_of(c, day), plan.traffic
    # The oracle runs here, once, in request order: BLAS results can differ in the last bits with
    # the shape of a batch, and the day's figures must not depend on how it was sharded.
    sampled = behavior.oracle_sample(c.scenario.seed, day, tr.request_id, n, c.scenario.oracle.sample_requests)
    # Each request's references on its own slate's length and, for the favoured arm, under the effect.
    ref = behavior.reference_ctr(world_of(c, day), state, tr.user_id[sampled], k, tr.request_id[sampled], day,
                                 shown=(served.slates[sampled] >= 0).sum(axis=1),
                                 favoured=plan.assigned[sampled] == c.scenario.effect.arm)
    c.lake.write("requests", day, tables.requests(plan))
    c.lake.write("request_latency", day, tables.request_latency(plan, served))
    c.lake.write("request_channel_latency", day, tables.request_channel_latency(plan, served))
    c.lake.write("impressions", day, tables.impressions(plan, served))
    c.lake.write("features_online", day, tables.features_online(plan, served))
    c.lake.write("organic", day, tables.organic(plan, served))
    if any(a.incremental.enabled for a in plan.arms.values()):
        c.lake.write("update_latency", day, tables.update_latency(plan, served))
    store = tables.online_store_daily(plan, served, c.experiment.online_store)
    if store is not None:
        c.lake.write("online_store_daily", day, store)
    world = tables.world_daily(plan, served, sampled, ref)
    c.lake.write("world_daily", day, world)
    log = DayLog(*tables.day_log(plan, served))
    save_state(advance(world_of(c, day + 1), state, log), c.world_dir)
    return ({f"{row['arm']}.{key}": row[key] for row in world.to_pylist() for key in row if key not in ("day", "arm")}
            | tables.online_metrics(store))


def run_day(c: Campaign, day: int, pipelines: Mapping[str, Pipeline] | None = None,
            track: Track = quietly) -> dict[str, float]:
    """Serve every request of `day` in this process, draw the clicks, write the day's tables."""
    plan = plan_day(c, day)
    online.reset_stream(c.lake, day, c.experiment.online_store)
    return finish_day(c, plan, serve_shard(c, plan, 0, 1, pipelines, track))


def _plan_path(c: Campaign, day: int) -> Path:
    return c.world_dir / f"shards-day={day:05d}" / "plan.npz"


def _shard_path(c: Campaign, day: int, index: int, n_shards: int) -> Path:
    return _plan_path(c, day).with_name(f"shard-{index}-of-{n_shards}.npz")


def plan_to_file(c: Campaign, day: int) -> str:
    """Draw the day's plan once, for every shard to read."""
    shutil.rmtree(_plan_path(c, day).parent, ignore_errors=True)     # the shards' stream files too
    online.reset_stream(c.lake, day, c.experiment.online_store)
    path = _plan_path(c, day)
    plan_day(c, day).save(path)
    return str(path)


def serve_shard_to_file(c: Campaign, day: int, index: int, n_shards: int,
                        pipelines: Mapping[str, Pipeline] | None = None, track: Track = quietly) -> str:
    plan = DayPlan.load(c, day, _plan_path(c, day))
    path = _shard_path(c, day, index, n_shards)
    serve_shard(c, plan, index, n_shards, pipelines, track).save(path)
    return str(path)


def finish_from_files(c: Campaign, day: int, n_shards: int) -> dict[str, float]:
    """Gather the shard files in request order and finish the day; the files are removed."""
    plan = DayPlan.load(c, day, _plan_path(c, day))
    parts = [ServedDay.load(_shard_path(c, day, i, n_shards)) for i in range(n_shards)]
    served = ServedDay.gather(parts, len(plan), c.experiment.slate_size, len(channel_names(plan)))
    metrics = finish_day(c, plan, served)
    shutil.rmtree(_plan_path(c, day).parent, ignore_errors=True)
    return metrics
