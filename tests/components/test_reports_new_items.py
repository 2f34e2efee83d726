"""The share of impressions and clicks that go to items which arrived on the day itself."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components import reports
from components.lake import Lake


def write_items(lake: Lake, day: int, ids: list[int]) -> None:
    n = len(ids)
    lake.write("items", day, pa.table({
        "day": np.full(n, day, np.int32), "item_id": np.asarray(ids, np.int64), "category": np.zeros(n, np.int32),
        "title": ["t"] * n, "created_day": np.full(n, day, np.int32),
        "content": pa.array([[0.0, 1.0]] * n, pa.list_(pa.float32()))}))


def write_impressions(lake: Lake, day: int, rows: list[tuple[str, int, bool]]) -> None:
    """rows: (arm, item, clicked), one request each."""
    n = len(rows)
    rid = day * 1000 + np.arange(n)
    lake.write("impressions", day, pa.table({
        "day": np.full(n, day, np.int32), "ts": rid, "request_id": rid, "user_id": rid,
        "item_id": np.asarray([r[1] for r in rows], np.int64), "position": np.zeros(n, np.int32),
        "arm": [r[0] for r in rows], "channels": [["popular"]] * n, "recall_ranks": [[0]] * n, "score": np.zeros(n, np.float32),
        "clicked": [r[2] for r in rows]}))


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    write_items(lake, 0, [0, 1, 2])
    write_items(lake, 1, [10, 11])       # arrived on day 1
    write_items(lake, 2, [20])           # arrived on day 2: yesterday's arrivals are no longer new
    write_impressions(lake, 1, [("a", 0, True), ("a", 10, True), ("a", 11, True), ("a", 1, False),
                                ("b", 0, True), ("b", 10, False), ("b", 2, False), ("b", 1, False),
                                ("c", 10, False)])
    write_impressions(lake, 2, [("a", 10, True), ("a", 20, True), ("a", 20, False), ("a", 0, False)])
    return lake


def test_new_item_shares_count_items_of_that_day_only(lake):
    day1 = reports.new_item_shares(lake, 1)
    assert day1["a"] == {"new_impression_share": 0.5, "new_click_share": pytest.approx(2 / 3)}
    assert day1["b"] == {"new_impression_share": 0.25, "new_click_share": 0.0}
    assert day1["c"] == {"new_impression_share": 1.0, "new_click_share": None}   # no clicks: undefined
    assert reports.new_item_shares(lake, 2)["a"] == {"new_impression_share": 0.5, "new_click_share": 0.5}
    assert reports.new_item_shares(lake, 3) == {}
