"""components/features and components/samples: point-in-time features, offline = online."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.features.definitions import FEATURES
from components.features.store import FeatureStore, build_features
from components.features.definitions import PRIOR_CTR, PRIOR_WEIGHT
from components.features.store import load_catalog
from components.lake import Lake, MissingPartitionError
from components.ranking import Samples
from components.ranking.base import serving_features
from components.samples import build_samples

DAY = 86_400
CATEGORY = [0, 0, 1, 1, 2, 2]
CONTENT = [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.8, 0.2], [0, 0, 1], [0.3, 0, 0.9]]

# (request_id, user, ts, [(item, clicked), ...] in position order)
DAY0 = [(1, 0, 100, [(0, True), (1, False), (2, False)]),
        (2, 1, 200, [(0, True), (3, True)]),
        (3, 0, 300, [(4, True)])]
DAY1 = [(10, 0, DAY + 50, [(3, True), (5, False)]),
        (11, 2, DAY + 70, [(5, True), (0, False)]),
        (12, 0, DAY + 90, [(1, False)])]


def impressions(day: int, requests) -> pa.Table:
    rows = [{"day": day, "ts": ts, "request_id": rid, "user_id": user, "item_id": item, "position": pos,
             "arm": "a", "channels": ["popular"], "recall_ranks": [0], "score": 0.5, "clicked": clicked}
            for rid, user, ts, shown in requests for pos, (item, clicked) in enumerate(shown)]
    return pa.Table.from_pylist(rows)


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    lake.write("items", 0, pa.table({
        "day": [0] * 6, "item_id": list(range(6)), "category": CATEGORY,
        "title": [f"item {i}" for i in range(6)], "created_day": [0] * 6,
        "content": pa.array(CONTENT, type=pa.list_(pa.float32())),
    }))
    lake.write("users", 0, pa.table({"day": [0] * 3, "user_id": [0, 1, 2], "age_bucket": [1, 2, 3],
                                     "region": [0, 0, 1], "created_day": [0] * 3}))
    lake.write("impressions", 0, impressions(0, DAY0))
    lake.write("impressions", 1, impressions(1, DAY1))
    return lake


def by_id(table: pa.Table, key: str) -> dict[int, dict]:
    return {row[key]: row for row in table.to_pylist()}


def test_features_of_day_0_know_nothing(lake):
    build_features(lake, 0)
    users = lake.read("features_user", 0)
    assert users.column("user_id").to_pylist() == [0, 1, 2]
    assert set(users.column("as_of").to_pylist()) == {0}
    assert users.column("u_impressions").to_pylist() == [0, 0, 0]
    assert users.column("u_recent").to_pylist() == [[], [], []]
    items = lake.read("features_item", 0)
    assert items.column("item_id").to_pylist() == list(range(6))
    assert items.column("i_clicks").to_pylist() == [0] * 6


def test_features_of_day_1_count_only_earlier_days(lake):
    build_features(lake, 1)
    users = by_id(lake.read("features_user", 1), "user_id")
    assert {u: (r["as_of"], r["u_impressions"], r["u_clicks"]) for u, r in users.items()} == {
        0: (DAY, 4, 2), 1: (DAY, 2, 2), 2: (DAY, 0, 0)}
    # newest click first; within a request, by position
    assert users[0]["u_recent"] == [4, 0]
    assert users[1]["u_recent"] == [0, 3]
    assert users[2]["u_recent"] == []
    items = by_id(lake.read("features_item", 1), "item_id")
    assert {i: (r["i_impressions"], r["i_clicks"]) for i, r in items.items()} == {
        0: (2, 2), 1: (1, 0), 2: (1, 0), 3: (1, 1), 4: (1, 1), 5: (0, 0)}
    # user 0 took 0 then 4, user 1 took 0 then 3 (one slate, by position): pairs both ways, ties by id
    assert {i: r["i_coclicked"] for i, r in items.items()} == {0: [3, 4], 1: [], 2: [], 3: [0], 4: [0], 5: []}


def test_features_of_day_2_add_day_1(lake):
    build_features(lake, 2)
    users = by_id(lake.read("features_user", 2), "user_id")
    assert (users[0]["u_impressions"], users[0]["u_clicks"], users[0]["u_recent"]) == (7, 3, [3, 4, 0])
    assert users[2]["u_recent"] == [5]
    items = by_id(lake.read("features_item", 2), "item_id")
    assert (items[5]["i_impressions"], items[5]["i_clicks"]) == (2, 1)


def test_rebuilding_features_replaces_them(lake):
    build_features(lake, 1)
    build_features(lake, 1)
    assert lake.read("features_user", 1).num_rows == 3
    assert lake.read("features_item", 1).num_rows == 6


def test_samples_join_features_as_of_request_time(lake):
    for day in (0, 1, 2):            # day 2's features exist too, and must not leak into day 1
        build_features(lake, day)
    rows_written = build_samples(lake, 1)
    samples = lake.read("samples", 1)
    assert rows_written == samples.num_rows == sum(len(shown) for *_, shown in DAY1)
    rows = samples.to_pylist()
    assert all(r["u_as_of"] <= r["ts"] and r["i_as_of"] <= r["ts"] for r in rows)
    assert {r["u_as_of"] for r in rows} == {r["i_as_of"] for r in rows} == {DAY}
    assert [(r["request_id"], r["item_id"], r["position"], r["label"]) for r in rows] == [
        (10, 3, 0, 1), (10, 5, 1, 0), (11, 5, 0, 1), (11, 0, 1, 0), (12, 1, 0, 0)]
    for r in rows:
        if r["user_id"] == 0:
            # user 0 clicked item 3 at DAY + 50: not in the features of either of their requests
            assert (r["u_impressions"], r["u_clicks"], r["u_recent"]) == (4, 2, [4, 0])
            assert 3 not in r["u_recent"]
    item3 = next(r for r in rows if r["item_id"] == 3)
    assert (item3["i_impressions"], item3["i_clicks"]) == (1, 1)           # day 0 only
    item5 = [r for r in rows if r["item_id"] == 5]
    assert all((r["i_impressions"], r["i_clicks"]) == (0, 0) for r in item5)


def test_samples_need_the_days_features(lake):
    build_features(lake, 0)
    with pytest.raises(MissingPartitionError) as exc:
        build_samples(lake, 1)
    assert "features_user" in str(exc.value) and "day 1" in str(exc.value)
    assert not lake.has("samples", 1)


def test_offline_samples_and_online_lookups_give_the_same_features(lake):
    build_features(lake, 1)
    build_samples(lake, 1)
    table = lake.read("samples", 1)
    catalog = load_catalog(lake, 1)
    offline = Samples.from_table(table, catalog)
    assert offline.x.shape == (table.num_rows, len(FEATURES))

    store = FeatureStore.load(lake, 1)
    users = store.user_batch(table.column("user_id").to_numpy())
    served = {"popular": np.zeros((table.num_rows, 1), np.int32)}     # every impression: popular's top
    online = serving_features(users, table.column("item_id").to_numpy()[:, None], served)[:, 0, :]    # [N, F]
    np.testing.assert_allclose(online, offline.x, rtol=1e-6, atol=1e-7)

    # and the features are the intended ones, for user 0 (2 clicks in 4, recent [4, 0]) x item 5
    names = [f.name for f in FEATURES]
    row = offline.x[[i for i, r in enumerate(table.to_pylist()) if r["user_id"] == 0 and r["item_id"] == 5][0]]
    f = dict(zip(names, row))
    assert f["u_ctr"] == pytest.approx((2 + PRIOR_CTR * PRIOR_WEIGHT) / (4 + PRIOR_WEIGHT))
    assert f["u_log_impressions"] == pytest.approx(np.log1p(4))
    assert f["i_ctr"] == pytest.approx(PRIOR_CTR)                       # item 5 never shown before
    assert f["cat_affinity"] == pytest.approx(0.5)                      # item 4 shares category 2
    assert f["has_history"] == 1.0
    profile = np.array(CONTENT[4]) + np.array(CONTENT[0])                # sum of recent clicks
    expected = profile @ np.array(CONTENT[5]) / np.linalg.norm(profile) / np.linalg.norm(CONTENT[5])
    assert f["content_match"] == pytest.approx(expected, rel=1e-4)
    cos = [np.dot(CONTENT[j], CONTENT[5]) / np.linalg.norm(CONTENT[j]) / np.linalg.norm(CONTENT[5]) for j in (4, 0)]
    assert f["last_content_sim"] == pytest.approx((cos[0] + 0.5 * cos[1]) / 1.5, rel=1e-4)   # newest weighs most
    assert f["recent_coclick"] == 0.0                                   # item 5 was never co-clicked
    row3 = offline.x[[i for i, r in enumerate(table.to_pylist()) if r["user_id"] == 0 and r["item_id"] == 3][0]]
    # item 3's co-clicked list is [0]; user 0's recent [4, 0]: 0 ranks first, one click back
    assert dict(zip(names, row3))["recent_coclick"] == pytest.approx(0.5 / 1.5)


def test_online_store_serves_unknown_users_as_new(lake):
    build_features(lake, 1)
    store = FeatureStore.load(lake, 1)
    batch = store.user_batch(np.array([0, 99]))
    assert batch.impressions.tolist() == [4, 0] and batch.clicks.tolist() == [2, 0]
    assert batch.recent[0, :3].tolist() == [4, 0, -1]
    assert (batch.recent[1] == -1).all()
    np.testing.assert_array_equal(store.items.impressions, [2, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(store.items.clicks, [2, 0, 0, 1, 1, 0])


def test_catalog_is_dense_by_item_id(lake):
    catalog = load_catalog(lake, 0)
    np.testing.assert_array_equal(catalog.item_id, np.arange(6))
    np.testing.assert_array_equal(catalog.category, CATEGORY)
    assert catalog.content.shape == (6, 3) and catalog.content.dtype == np.float32


def test_recent_clicks_are_capped_newest_first(lake):
    many = [(100 + j, 2, 1000 + j, [(j % 6, True)]) for j in range(25)]   # user 2: 25 clicks on day 0
    lake.write("impressions", 0, impressions(0, DAY0 + many))
    build_features(lake, 1)
    users = by_id(lake.read("features_user", 1), "user_id")
    assert users[2]["u_clicks"] == 25
    assert users[2]["u_recent"] == [(24 - j) % 6 for j in range(20)]
    assert FeatureStore.load(lake, 1).user_batch(np.array([2])).recent.shape == (1, 20)


def test_takes_of_two_requests_in_one_second_keep_the_request_order_whatever_the_rows_order(lake):
    # Two visits of user 2 in the same second, each with a click and an organic take: the later
    # request is the newer, its organic take newest of all. A sort left with ties ordered such
    # rows differently run to run, and one swapped pair sent a whole campaign on another course.
    tied = [(200, 2, 5000, [(1, True)]), (201, 2, 5000, [(3, True)])]
    organic = pa.table({"day": [0, 0], "ts": [5000, 5000], "request_id": [200, 201], "user_id": [2, 2],
                        "item_id": [4, 5]})
    orders = []
    for flip in (False, True):
        rows = impressions(0, DAY0 + tied)
        lake.write("impressions", 0, rows.take(np.arange(rows.num_rows)[::-1]) if flip else rows)
        lake.write("organic", 0, organic.take([1, 0]) if flip else organic)
        build_features(lake, 1)
        orders.append(by_id(lake.read("features_user", 1), "user_id")[2]["u_recent"])
        neighbours = by_id(lake.read("features_item", 1), "item_id")
        orders.append([neighbours[i]["i_coclicked"] for i in (1, 3, 4, 5)])
    assert orders[0][:4] == [5, 3, 4, 1]
    assert orders[0] == orders[2] and orders[1] == orders[3]
