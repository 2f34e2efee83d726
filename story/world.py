"""The world's side of a day: its state as the day starts, and what it announces to the recommender."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.lake import MissingPartitionError
from sim.state import WorldState, initial_state, load_state, save_state, state_path
from sim.world import World, cached_world, item_catalog, user_catalog
from story.campaign import Campaign


def world_of(c: Campaign, day: int) -> World:
    """Every user and item that has arrived by `day`."""
    return cached_world(c.scenario, day)


def state_of(c: Campaign, day: int) -> WorldState:
    """The world as `day` starts: drawn fresh on day 0, otherwise what the day before left."""
    path = state_path(c.world_dir, day)
    if day == 0 and not path.is_file():
        save_state(initial_state(world_of(c, 0)), c.world_dir)
    elif not path.is_file():
        raise MissingPartitionError(f"day {day} starts from the world state that day {day - 1} left, and "
                                    f"{path} is missing; run the days in order")
    return load_state(c.world_dir, day)


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
