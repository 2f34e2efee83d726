"""story/: a day from traffic to tables, without Prefect or MLflow, on the tiny world."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from components.experiment import load_experiment
from components.features.store import build_features
from components.lake import MissingPartitionError
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import finish_from_files, plan_to_file, run_day, serve_shard_to_file
from story.plan import plan_day
from story.serve import ServedDay
from story.world import publish_catalog

# Written from what the world and the pipelines decided, so they do not depend on the sharding.
DECIDED = ("requests", "impressions", "features_online", "world_daily", "organic")


def serve_side_by_side(c, day: int, shards: int) -> None:
    """The day's shards at the same time, as a task runner serves them: they meet every
    micro-batch to share item events, so one after the other would wait forever."""
    with ThreadPoolExecutor(shards) as pool:
        for f in [pool.submit(serve_shard_to_file, c, day, i, shards) for i in range(shards)]:
            f.result()


def _campaign(tmp_path, name, scenario=None):
    c = create_campaign(tmp_path / name, "t", scenario or load_scenario("tiny"), load_experiment("default"), None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    return c


def train_and_open_next_day(c, day: int) -> None:
    """What the flow does after serving `day`: its samples and models, then day + 1's catalogue and features."""
    from components import samples, training

    samples.build_samples(c.lake, day)
    c.models_dir(day).mkdir(parents=True)
    training.train_channels(c.lake, day, c.experiment, c.models_dir(day))
    training.train_rankers(c.lake, day, c.experiment, c.models_dir(day))
    publish_catalog(c, day + 1)
    build_features(c.lake, day + 1)


def test_day_0_is_served_by_bootstrap_models_trained_before_it(tmp_path):
    c = _campaign(tmp_path, "c")
    with pytest.raises(MissingPartitionError, match="logging policy's models"):
        run_day(c, 0)               # serving fits nothing: without the bootstrap models it stops
    assert not c.lake.has("impressions", 0)
    out = models.train_bootstrap(c)
    assert sorted(p.name for p in out.iterdir()) == sorted(c.experiment.logging_policy.channels)
    assert run_day(c, 0)["logging.requests"] > 0
    channels = c.lake.read("impressions", 0).column("channels").to_pylist()
    # Before any click nothing is popular, so exploration fills the bootstrap day's slates.
    assert {ch for row in channels for ch in row} == set(c.experiment.logging_policy.channels) - {"popular"}


def _one_and_three_shards(one, three) -> None:
    """Day 0 in one process and in three shards through files: the same metrics and tables."""
    for c in (one, three):
        models.train_bootstrap(c)
    metrics = run_day(one, 0)
    plan_to_file(three, 0)
    serve_side_by_side(three, 0, 3)
    assert finish_from_files(three, 0, 3) == metrics
    for table in DECIDED:
        assert one.lake.path(table, 0).read_bytes() == three.lake.path(table, 0).read_bytes(), table


def test_a_day_served_in_shards_through_files_writes_the_tables_of_one_process(tmp_path):
    one, three = _campaign(tmp_path, "one"), _campaign(tmp_path, "three")
    _one_and_three_shards(one, three)
    assert not list(three.world_dir.glob("shards-*"))          # the plan and shard files are removed


def test_the_plan_is_the_same_draw_whoever_reads_it(tmp_path):
    c = _campaign(tmp_path, "c")
    a, b = plan_day(c, 0), plan_day(c, 0)
    np.testing.assert_array_equal(a.traffic.request_id, b.traffic.request_id)
    saved = tmp_path / "plan.npz"
    a.save(saved)
    loaded = type(a).load(c, 0, saved)
    for field in ("request_id", "user_id", "ts"):
        np.testing.assert_array_equal(getattr(loaded.traffic, field), getattr(a.traffic, field))
    assert loaded.assigned.tolist() == a.assigned.tolist() and loaded.layer == a.layer


def test_a_served_day_round_trips_through_its_file(tmp_path):
    rows = np.array([4, 0, 2])
    served = ServedDay.empty(rows, slate_size=3, n_channels=2)
    served.slates[1] = [7, 8, -1]
    served.origin[1] = [1, 3, 0]
    served.channel_ms[2, 1] = 0.5
    served.save(tmp_path / "s.npz")
    back = ServedDay.load(tmp_path / "s.npz")
    for name in vars(served):
        np.testing.assert_array_equal(getattr(back, name), getattr(served, name), err_msg=name)
    gathered = ServedDay.gather([back], n=5, slate_size=3, n_channels=2)
    assert gathered.slates[0].tolist() == [7, 8, -1] and gathered.origin[0].tolist() == [1, 3, 0]
    assert gathered.slates[3].tolist() == [-1, -1, -1] and np.isnan(gathered.channel_ms[3]).all()


def test_the_sequential_world_gives_the_same_day_and_next_state_in_shards(tmp_path):
    """The tiny world with transitions, past choices and a catalogue outside option: three shards
    write the tables and the next day's world state (memories, purchases, no-click weights) of one."""
    import dataclasses

    from sim.state import state_path
    tiny = load_scenario("tiny")
    seq = dataclasses.replace(tiny, sequence=dataclasses.replace(tiny.sequence, weight=1.0, floor=0.002, repeat=2.0,
                                                                   prior_events=3),
                              behavior=dataclasses.replace(tiny.behavior, outside="catalogue", no_click_utility=-4.0,
                                                           organic=0.5))
    one, three = _campaign(tmp_path, "one", seq), _campaign(tmp_path, "three", seq)
    _one_and_three_shards(one, three)
    a, b = (np.load(state_path(c.world_dir, 1)) for c in (one, three))
    for key in ("user_recent", "bought_key", "user_outside", "item_clicks"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (a["user_recent"] >= 0).any() and a["user_outside"].std() > 0
    assert one.lake.read("organic", 0).num_rows > 0


def test_organic_takes_are_logged_remembered_and_learned_from(tmp_path):
    """Half of the visits also take an item on their own: it is in the lake's organic table, the
    world's memory of the user, the recall channels' training data and the next day's u_recent."""
    import dataclasses

    from components.training import train_data
    from sim.state import state_path
    tiny = load_scenario("tiny")
    world = dataclasses.replace(tiny, behavior=dataclasses.replace(tiny.behavior, organic=0.5))
    c = _campaign(tmp_path, "c", world)
    models.train_bootstrap(c)
    run_day(c, 0)
    organic = c.lake.read("organic", 0).to_pydict()
    visits = c.lake.read("requests", 0).num_rows
    assert 0.4 * visits < len(organic["item_id"]) < 0.6 * visits
    # The world remembers clicks and organic takes in time order, a visit's take after its slate.
    clicks = c.lake.read("impressions", 0).to_pydict()
    events = sorted([(t, r, 0, u, it) for t, r, u, it, k in zip(clicks["ts"], clicks["request_id"], clicks["user_id"],
                                                                 clicks["item_id"], clicks["clicked"]) if k] +
                    [(t, r, 1, u, it) for t, r, u, it in zip(organic["ts"], organic["request_id"], organic["user_id"],
                                                            organic["item_id"])])
    recent = np.load(state_path(c.world_dir, 1))["user_recent"]
    memory = recent.shape[1]
    for user in set(organic["user_id"]):
        mine = [it for *_, u, it in events if u == user][::-1][:memory]
        assert recent[user].tolist() == mine + [-1] * (memory - len(mine))
    last = {u: it for *_, u, it in events}
    data = train_data(c.lake, 0)
    n_clicks = sum(clicks["clicked"])
    assert len(data.click_item) == n_clicks + len(organic["item_id"])
    assert np.all(np.diff(data.click_ts) >= 0)
    publish_catalog(c, 1)
    build_features(c.lake, 1)
    users = c.lake.read("features_user", 1).to_pydict()
    recent_of = dict(zip(users["user_id"], users["u_recent"]))
    assert all(item in recent_of[user] for user, item in last.items())
    # Counts of impressions and clicks stay the slates' own.
    clicked_of = {}
    for u, k in zip(clicks["user_id"], clicks["clicked"]):
        clicked_of[u] = clicked_of.get(u, 0) + int(k)
    assert all(n == clicked_of.get(u, 0) for u, n in zip(users["user_id"], users["u_clicks"]))


def test_a_trained_day_gives_the_same_tables_in_shards(tmp_path):
    """Day 1, served by the rankers and item-CF trained on day 0 (not the bootstrap's models):
    three shards through files write the tables and the next world state of one process."""
    from components import samples
    from sim.state import state_path

    pair = []
    for name in ("one", "three"):
        c = _campaign(tmp_path, name)
        models.train_bootstrap(c)
        run_day(c, 0)
        train_and_open_next_day(c, 0)
        pair.append(c)
    one, three = pair
    metrics = run_day(one, 1)
    plan_to_file(three, 1)
    serve_side_by_side(three, 1, 3)
    assert finish_from_files(three, 1, 3) == metrics
    assert {"control.requests", "treatment.requests"} <= set(metrics)
    for table in DECIDED:
        assert one.lake.path(table, 1).read_bytes() == three.lake.path(table, 1).read_bytes(), table
    # The treatment arm's slates carry item-CF candidates: the trained models served the day.
    channels = one.lake.read("impressions", 1).column("channels").to_pylist()
    assert "itemcf" in {ch for row in channels for ch in row}
    # Per shown item, no arm's served slates beat the oracle's of the same lengths: norm <= 1.
    for row in one.lake.read("world_daily", 1).to_pylist():
        assert row["ctr_random"] < row["ctr_expected"] <= row["ctr_oracle"], row
    # The shards shared their item events: the samples' last-hour item counts (every user's) are
    # what each shard served, to the bit.
    from components.features import consistency
    for c in (one, three):
        samples.build_samples(c.lake, 1)
        assert consistency.check(c.lake, 1)["match_rate"] == 1.0
    assert one.lake.path("samples", 1).read_bytes() == three.lake.path("samples", 1).read_bytes()
    assert c.lake.read("samples", 1).column("rt_i_impressions_1h").to_numpy().max() > 0
    a, b = (np.load(state_path(c.world_dir, 2)) for c in (one, three))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
