"""components/serving/pipeline.py: channels -> merge -> rank -> slate, timed per stage."""
from __future__ import annotations

import numpy as np
import pytest

from components.ranking import MLPConfig, MLPRanker, Samples
from components.features.definitions import FEATURES
from components.ranking.base import serving_features
from components.recall import ExploreRecaller, ItemCFRecaller, PopularRecaller
from components.serving import ArmConfig, Pipeline
from components.types import Candidates, pad_rows


class FixedRecaller:
    """A stub channel: row b of every batch recalls `rows[user_id]` (or `default`)."""

    def __init__(self, name, default=(), rows=None):
        self.name, self.default, self.rows = name, list(default), rows or {}

    def recall(self, users, k):
        lists = [self.rows.get(int(u), self.default) for u in users.user_ids]
        items = pad_rows([np.asarray(r, np.int64) for r in lists], k, -1, np.int64)
        return Candidates(items=items, scores=np.where(items >= 0, 1.0, 0.0).astype(np.float32))


class ItemIdRanker:
    """A stub ranker: the higher the item id, the better."""

    def score(self, users, items, ranks=None):
        return np.where(items >= 0, items.astype(np.float32), -np.inf)


class HashRanker:
    """A stub ranker with an arbitrary but fixed preference per (user, item)."""

    def score(self, users, items, ranks=None):
        s = ((items * 7919 + users.user_ids[:, None] * 104729) % 1009).astype(np.float32)
        return np.where(items >= 0, s, -np.inf)


def test_merge_dedupes_drops_history_and_interleaves(make_users):
    a = FixedRecaller("a", [1, 2, 3, 4, 5, 6])
    b = FixedRecaller("b", [3, 7, 8, 9])
    pipe = Pipeline(ArmConfig(channels={"a": 3, "b": 2}), 5, {"a": a, "b": b}, None)
    res = pipe.serve(make_users([0], recent=[[2]]))
    # a: 1, (2 was clicked), 3, 4; b: (3 is a's already), 7, 8; round-robin a, b, a, b, a
    assert res.items.tolist() == [[1, 7, 3, 8, 4]]
    assert res.channels == [[("a",), ("b",), ("a", "b"), ("b",), ("a",)]]
    assert res.items.dtype == np.int64 and res.scores.dtype == np.float32
    # each item's index in each channel's own list, -1 where that channel did not recall it
    assert res.ranks[0].tolist() == [[0, -1], [-1, 1], [2, 0], [-1, 2], [3, -1]]


def test_quotas_cap_each_channel_even_when_the_ranker_wants_more(make_users):
    a = FixedRecaller("a", range(0, 10))
    b = FixedRecaller("b", range(10, 20))
    pipe = Pipeline(ArmConfig(channels={"a": 2, "b": 3}, ranker="mlp"), 5, {"a": a, "b": b}, ItemIdRanker())
    res = pipe.serve(make_users([0, 1]))
    for row, chans in zip(res.items.tolist(), res.channels):
        assert row == [12, 11, 10, 1, 0]       # ranked by item id, but only 2 of a's and 3 of b's
        assert chans == [("b",)] * 3 + [("a",)] * 2
    np.testing.assert_array_equal(res.scores[0], [12, 11, 10, 1, 0])


def test_fewer_candidates_than_the_slate_pad_with_minus_one(make_users):
    a = FixedRecaller("a", [0])
    b = FixedRecaller("b", [10, -1, 0])
    pipe = Pipeline(ArmConfig(channels={"a": 2, "b": 3}, ranker="mlp"), 5, {"a": a, "b": b}, ItemIdRanker())
    res = pipe.serve(make_users([0]))
    assert res.items.tolist() == [[10, 0, -1, -1, -1]]
    assert res.channels == [[("b",), ("a", "b"), (), (), ()]]
    np.testing.assert_array_equal(res.scores, [[10, 0, 0, 0, 0]])


def test_quota_counts_new_items_only(make_users):
    # b's first two items are a's too: b still adds two items of its own
    a = FixedRecaller("a", [1, 2])
    b = FixedRecaller("b", [1, 2, 3, 4, 5])
    pipe = Pipeline(ArmConfig(channels={"a": 2, "b": 2}), 4, {"a": a, "b": b}, None)
    res = pipe.serve(make_users([0]))
    assert sorted(res.items[0].tolist()) == [1, 2, 3, 4]
    by_item = dict(zip(res.items[0].tolist(), res.channels[0]))
    assert by_item == {1: ("a", "b"), 2: ("a", "b"), 3: ("b",), 4: ("b",)}


@pytest.mark.parametrize("ranker", [None, HashRanker()])
def test_slates_have_no_duplicates_no_history_and_honest_channels(make_users, ranker):
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 12
    lists = {name: {u: rng.integers(-1, n_items, size=rng.integers(0, 15)).tolist() for u in range(n_users)}
             for name in ("a", "b", "c")}
    channels = {name: FixedRecaller(name, rows=rows) for name, rows in lists.items()}
    arm = ArmConfig(channels={"a": 3, "b": 2, "c": 4}, ranker="none" if ranker is None else "mlp")
    recent = [rng.choice(n_items, size=rng.integers(0, 4), replace=False).tolist() for _ in range(n_users)]
    res = Pipeline(arm, 6, channels, ranker).serve(make_users(range(n_users), recent=recent))
    assert res.items.shape == res.scores.shape == (n_users, 6)
    for u in range(n_users):
        shown = [i for i in res.items[u].tolist() if i >= 0]
        assert len(shown) == len(set(shown))
        assert not set(shown) & set(recent[u])
        # -1 only at the end of a slate
        assert res.items[u, : len(shown)].tolist() == shown
        for item, chans in zip(res.items[u].tolist(), res.channels[u]):
            if item < 0:
                assert chans == ()
                continue
            assert chans and all(item in lists[c][u] for c in chans)
        # per channel, the items it alone brought in stay within its quota
        for name, quota in arm.channels.items():
            assert sum(1 for c in res.channels[u] if c == (name,)) <= quota


def test_timings_cover_every_stage(make_users):
    a = FixedRecaller("a", range(8))
    res = Pipeline(ArmConfig(channels={"a": 8}, ranker="mlp"), 4, {"a": a}, HashRanker()).serve(
        make_users([0, 1, 2]))
    t = res.timings_ms
    assert set(t) == {"recall", "merge", "coarse", "fine", "total"}
    assert all(v >= 0 for v in t.values())
    assert all(t["total"] >= t[s] for s in ("recall", "merge", "coarse", "fine"))
    assert t["total"] == pytest.approx(t["recall"] + t["merge"] + t["coarse"] + t["fine"], abs=1e-6)


def test_pipeline_refuses_missing_parts():
    with pytest.raises(ValueError, match="b"):
        Pipeline(ArmConfig(channels={"a": 2, "b": 2}), 3, {"a": FixedRecaller("a")}, None)
    with pytest.raises(ValueError, match="mlp"):
        Pipeline(ArmConfig(channels={"a": 2}, ranker="mlp"), 3, {"a": FixedRecaller("a")}, None)


def test_pipeline_without_ranker_ignores_a_given_ranker(make_users):
    pipe = Pipeline(ArmConfig(channels={"a": 3}), 3, {"a": FixedRecaller("a", [5, 1, 9])}, ItemIdRanker())
    assert pipe.serve(make_users([0])).items.tolist() == [[5, 1, 9]]


def _users_for_batches(make_users):
    return make_users([0, 1, 2, 3, 4, 5],
                      recent=[[1], [4, 0], [], [7, 3, 2], [1, 2], [5]],
                      impressions=[10, 40, 0, 25, 8, 3], clicks=[1, 4, 0, 2, 2, 1],
                      item_impressions=np.arange(12) * 5 + 3, item_clicks=np.arange(12) % 4)


def _rows(users, i):
    from components.types import UserBatch
    return UserBatch(user_ids=users.user_ids[i:i + 1], impressions=users.impressions[i:i + 1],
                     clicks=users.clicks[i:i + 1], recent=users.recent[i:i + 1], items=users.items,
                     features={k: v[i:i + 1] for k, v in users.features.items()}, day=users.day)


def _small_ranker(seed=0):
    users_x = np.random.default_rng(seed).standard_normal((400, len(FEATURES))).astype(np.float32)
    label = (users_x[:, 5] + 0.3 * np.random.default_rng(seed + 1).standard_normal(400) > 0).astype(np.float32)
    return MLPRanker(MLPConfig(hidden=8, epochs=2, batch_size=100)).fit(
        Samples(x=users_x, label=label, position=np.zeros(400, np.int64), request_id=np.arange(400)))


def test_a_batch_of_one_gives_the_same_slate_as_its_row_in_a_batch(co_click_data, make_users):
    channels = {"popular": PopularRecaller().fit(co_click_data), "itemcf": ItemCFRecaller().fit(co_click_data)}
    pipe = Pipeline(ArmConfig(channels={"popular": 4, "itemcf": 4}, ranker="mlp"), 5, channels, _small_ranker())
    users = _users_for_batches(make_users)
    batch = pipe.serve(users)
    for i in range(len(users)):
        one = pipe.serve(_rows(users, i))
        np.testing.assert_array_equal(one.items[0], batch.items[i])
        np.testing.assert_allclose(one.scores[0], batch.scores[i], rtol=1e-5)
        assert one.channels[0] == batch.channels[i]


def test_a_batch_of_one_gives_the_same_slate_with_the_logging_policy(co_click_data, make_users):
    # The logging policy (popular + explore, as in configs/experiments/default.yaml) serves day 0
    # in batches of serve_batch_size; a request's slate should not depend on its batch neighbours.
    channels = {"popular": PopularRecaller().fit(co_click_data), "explore": ExploreRecaller().fit(co_click_data)}
    pipe = Pipeline(ArmConfig(channels={"popular": 3, "explore": 3}), 5, channels, None)
    users = _users_for_batches(make_users)
    batch = pipe.serve(users)
    for i in range(len(users)):
        np.testing.assert_array_equal(pipe.serve(_rows(users, i)).items[0], batch.items[i],
                                      err_msg=f"row {i}")


def test_ranked_slate_is_ordered_by_the_rankers_serving_features(co_click_data, make_users):
    ranker = _small_ranker()
    channels = {"popular": PopularRecaller().fit(co_click_data)}
    pipe = Pipeline(ArmConfig(channels={"popular": 12}, ranker="mlp"), 4, channels, ranker)
    users = _users_for_batches(make_users)
    res = pipe.serve(users)
    # The channel's candidates as the merge takes them: clicked items only, seen ones dropped.
    recalled = channels["popular"].recall(users, 12 + users.recent.shape[1]).items
    for i in range(len(users)):
        cands = np.array([[c for c in recalled[i].tolist() if c >= 0 and c not in users.recent[i].tolist()][:12]])
        probs = ranker.predict(serving_features(_rows(users, i), cands))[0]
        best = cands[0][np.argsort(-probs, kind="stable")[:4]]
        assert set(res.items[i].tolist()) == set(best.tolist())
        assert (np.diff(res.scores[i]) <= 0).all()
