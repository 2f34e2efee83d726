"""components/recall: every channel on tiny click logs."""
from __future__ import annotations

import numpy as np

from components.recall import (ExploreConfig, ExploreRecaller, ItemCFConfig, ItemCFRecaller,
                               PopularConfig, PopularRecaller)
from components.types import Catalog


# ---- popular ---------------------------------------------------------------------------------

def test_popular_ranks_by_decayed_clicks_not_raw_counts(make_train_data, make_users):
    clicks = ([(0, 1, 5)] * 3        # 3 clicks today:             3
              + [(0, 2, 4)] * 5      # 5 clicks one day old:       5 * 0.5 = 2.5
              + [(0, 3, 3)] * 9      # 9 clicks two days old:      9 * 0.25 = 2.25
              + [(0, 4, 2)] * 20     # 20 clicks, outside the window: 0
              + [(0, 5, 5)])         # 1 click today:              1
    model = PopularRecaller(PopularConfig(window_days=3, decay=0.5)).fit(make_train_data(clicks, day=5))
    expected = np.zeros(12)
    expected[[1, 2, 3, 5]] = [3.0, 2.5, 2.25, 1.0]
    np.testing.assert_allclose(model.scores_, expected)
    out = model.recall(make_users([7, 8, 9]), 4)
    assert out.items.shape == out.scores.shape == (3, 4)
    np.testing.assert_array_equal(out.items, np.tile([1, 2, 3, 5], (3, 1)))
    np.testing.assert_allclose(out.scores[0], [3.0, 2.5, 2.25, 1.0])


def test_popular_ignores_nothing_inside_the_window(make_train_data, make_users):
    model = PopularRecaller(PopularConfig(window_days=7, decay=1.0)).fit(
        make_train_data([(0, 6, 0), (1, 6, 6), (2, 9, 6)], day=6))
    assert model.recall(make_users([0]), 2).items.tolist() == [[6, 9]]


def test_popular_ties_are_broken_by_item_id(make_train_data, make_users):
    # popular.py promises "Ties (e.g. no clicks yet) broken by item id": on day 0 nothing is
    # clicked, so the logging policy's popular candidates are the tie order.
    n = 300
    cat = Catalog(item_id=np.arange(n, dtype=np.int64), category=np.zeros(n, np.int32),
                  content=np.ones((n, 2), np.float32))
    model = PopularRecaller().fit(make_train_data([(0, 100, 0), (0, 100, 0), (1, 5, 0)], day=0, cat=cat))
    rest = [i for i in range(n) if i not in (100, 5)]
    np.testing.assert_array_equal(model.ranked_, [100, 5, *rest])


# ---- item-CF ---------------------------------------------------------------------------------

def test_itemcf_recalls_co_clicked_items(co_click_data, make_users):
    model = ItemCFRecaller(ItemCFConfig(neighbours=10, alpha=0.5)).fit(co_click_data)
    out = model.recall(make_users([9], recent=[[1]]), 4)
    # item 1 is co-clicked with 2 by two users (sim 2 / (2**.5 * 2**.5) = 1) and with 3 by one
    # (sim 1 / (2**.5 * 1**.5)); nothing else was clicked with it.
    np.testing.assert_array_equal(out.items, [[2, 3, -1, -1]])
    np.testing.assert_allclose(out.scores, [[1.0, 2 ** -0.5, 0, 0]], rtol=1e-5)


def test_itemcf_sums_the_neighbours_of_the_history(co_click_data, make_users):
    model = ItemCFRecaller().fit(co_click_data)
    out = model.recall(make_users([9], recent=[[1, 4]]), 5)
    assert set(out.items[0, :2]) == {2, 5}
    assert out.items[0, 2] == 3
    assert (out.items[0, 3:] == -1).all()
    assert (np.diff(out.scores[0]) <= 0).all()




def test_itemcf_windowed_pairs_weight_distance_direction_and_recency(make_train_data, make_users):
    # User 0 clicks 1, 2, 3, 4, 5 in that order; users 1 and 2 click one item each, adjacent in
    # the log but never a pair (different users).
    clicks = [(0, 1, 0), (0, 2, 0), (0, 3, 0), (0, 4, 0), (0, 5, 0), (1, 6, 0), (2, 7, 0)]
    cfg = ItemCFConfig(window_days=1, pair_window=2, distance_decay=1.0, forward_weight=2.0,
                       normalise=False, recency_decay=1.0, history=2)
    model = ItemCFRecaller(cfg).fit(make_train_data(clicks, day=0))
    sim = model.sim_.toarray()
    assert sim[1, 2] == 2.0 and sim[2, 1] == 1.0          # next click, forward weighted
    assert sim[1, 3] == 1.0 and sim[3, 1] == 0.5          # two apart: 1 / 2
    assert sim[1, 4] == 0.0 and sim[6, 7] == 0.0 and sim[7, 6] == 0.0
    # Seeds 3 (newest, weight 1) and 1 (weight 1 / 2): 2 = 1 + 2/2, 4 = 2, 5 = 1, 1 = 0.5, 3 = 1/2.
    out = model.recall(make_users([9], recent=[[3, 1]]), 5)
    got = dict(zip(out.items[0].tolist(), out.scores[0].tolist()))
    assert got == {2: 2.0, 4: 2.0, 5: 1.0, 1: 0.5, 3: 0.5}


def test_itemcf_pads_with_minus_one_without_history(co_click_data, make_users):
    model = ItemCFRecaller().fit(co_click_data)
    out = model.recall(make_users([1, 2], recent=[[], [3]]), 4)
    assert (out.items[0] == -1).all() and (out.scores[0] == 0).all()
    # item 3 was clicked with 1 and 2 by user 1
    assert set(out.items[1, :2]) == {1, 2} and (out.items[1, 2:] == -1).all()


def test_itemcf_respects_the_window_and_the_history_length(make_train_data, make_users):
    data = make_train_data([(0, 1, 0), (0, 2, 0), (1, 1, 9), (1, 3, 9)], day=9)
    model = ItemCFRecaller(ItemCFConfig(window_days=5)).fit(data)
    assert model.recall(make_users([5], recent=[[1]]), 3).items.tolist() == [[3, -1, -1]]
    short = ItemCFRecaller(ItemCFConfig(history=1)).fit(data)
    # only the newest click (3) seeds the recall: item 2 (a neighbour of 1 only) is not recalled
    assert short.recall(make_users([5], recent=[[3, 2]]), 3).items.tolist() == [[1, -1, -1]]


def test_itemcf_fits_on_no_clicks(make_train_data, make_users):
    model = ItemCFRecaller().fit(make_train_data([], day=0))
    assert (model.recall(make_users([0], recent=[[1]]), 3).items == -1).all()


# ---- explore ---------------------------------------------------------------------------------

def test_explore_is_deterministic_for_the_same_users_and_day(co_click_data, make_users):
    users = make_users([3, 1, 4, 1, 5])
    a = ExploreRecaller(ExploreConfig(seed=2)).fit(co_click_data).recall(users, 6)
    b = ExploreRecaller(ExploreConfig(seed=2)).fit(co_click_data).recall(users, 6)
    np.testing.assert_array_equal(a.items, b.items)
    assert a.items.shape == (5, 6)
    assert a.items.min() >= 0 and a.items.max() < 12
    assert all(len(set(row)) == 6 for row in a.items.tolist())
    other_seed = ExploreRecaller(ExploreConfig(seed=3)).fit(co_click_data).recall(users, 6)
    assert not np.array_equal(a.items, other_seed.items)


def test_explore_changes_from_day_to_day(make_train_data, make_users):
    users = make_users([0, 1, 2, 3])
    a = ExploreRecaller().fit(make_train_data([], day=1)).recall(users, 8)
    b = ExploreRecaller().fit(make_train_data([], day=2)).recall(users, 8)
    assert not np.array_equal(a.items, b.items)


def test_explore_never_asks_for_more_than_the_catalog(make_train_data, make_users):
    out = ExploreRecaller().fit(make_train_data([], day=0)).recall(make_users([0]), 50)
    assert sorted(out.items[0].tolist()) == list(range(12))
