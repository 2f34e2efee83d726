"""components/recall_eval: recall@K of channels and of the merge, checked by hand on two users."""
from __future__ import annotations

import numpy as np
import pytest

from common.typedconf import ConfigError, from_mapping
from components.features.columns import columns_of
from components.features.store import FeatureStore
from components.recall_eval import MERGE, RecallEvalConfig, arm_recall, markdown, metric_name, recall_of, unseen_top
from components.serving import ArmConfig
from components.serving.pipeline import Pipeline
from components.types import Candidates, Catalog, ItemFeatures


class FixedList:
    """A channel that recalls the same list for everyone (its first k items)."""

    def __init__(self, name: str, items: list[int]):
        self.name, self.items = name, items

    def recall(self, users, k):
        row = (self.items + [-1] * k)[:k]
        items = np.tile(np.asarray(row, np.int64), (len(users), 1))
        return Candidates(items=items, scores=np.where(items >= 0, 1.0, 0.0).astype(np.float32))


def store() -> FeatureStore:
    n = 12
    catalog = Catalog(item_id=np.arange(n, dtype=np.int64), category=np.zeros(n, np.int32),
                      content=np.zeros((n, 1), np.float32))
    items = ItemFeatures(catalog=catalog, impressions=np.zeros(n, np.int64), clicks=np.zeros(n, np.int64))
    # User 10 has clicked item 1 before the day; user 11 is new (no row: features of a new user).
    cols = {c.name: np.zeros(1, np.int64) for c in columns_of("features_user") if c.name != "u_recent"}
    cols |= {"u_impressions": np.array([5]), "u_clicks": np.array([1])}
    return FeatureStore.by_hand(day=1, items=items, user_ids=[10], user_columns=cols,
                                recent=[np.array([1], np.int64)])


def test_recall_by_hand_for_channels_and_the_merge():
    a, b = FixedList("a", [1, 2, 4, 5, 6]), FixedList("b", [3, 2, 8, 9])
    pipe = Pipeline(ArmConfig(channels={"a": 2, "b": 2}), 2, {"a": a, "b": b}, None)
    clicked = [np.array([1, 2, 3, 7]), np.array([4])]
    got = arm_recall(pipe, store(), np.array([10, 11]), clicked, (2,), {"a": a, "b": b})
    # User 10: item 1 was seen, so the targets are {2, 3, 7}; user 11's target is {4}.
    # a's top 2 unseen: user 10 [2, 4] -> 1/3, user 11 [1, 2] -> 0.
    # b's top 2: [3, 2] for both -> 2/3 and 0.
    # merge (a then b, quota 2 each, round robin): user 10 [2, 3, 4, 8] -> @2 [2, 3] = 2/3, all 2/3;
    # user 11 [1, 3, 2, 8] -> 0.
    assert got[("a", "2")] == pytest.approx((1 / 6, 2))
    assert got[("b", "2")] == pytest.approx((1 / 3, 2))
    assert got[(MERGE, "2")] == pytest.approx((1 / 3, 2))
    assert got[(MERGE, "all")] == pytest.approx((1 / 3, 2))


def test_users_with_only_seen_clicks_have_no_targets():
    a = FixedList("a", [2, 3])
    pipe = Pipeline(ArmConfig(channels={"a": 2}), 2, {"a": a}, None)
    assert arm_recall(pipe, store(), np.array([10]), [np.array([1])], (1,), {"a": a}) == {}


def test_helpers():
    np.testing.assert_array_equal(unseen_top(np.array([[5, -1, 1, 3, 4]]), [np.array([1])], 2), [[5, 3]])
    np.testing.assert_allclose(recall_of(np.array([[1, 2], [3, 4]]), [np.array([2, 9]), np.array([])]),
                               [0.5, np.nan])
    row = {"day": 1, "arm": "control", "channel": "swing", "k": "50", "in_arm": True, "recall": 0.25, "users": 4}
    assert metric_name(row) == "recall.control.swing.at_50"
    assert markdown([row])[2] == "| control | swing | yes | 4 | 0.250 |"


def test_config_is_checked():
    with pytest.raises(ConfigError, match="recall_eval.ks"):
        from_mapping(RecallEvalConfig, {"ks": [0]}, "recall_eval")
    with pytest.raises(ConfigError, match="recall_eval.max_users"):
        from_mapping(RecallEvalConfig, {"max_users": 0}, "recall_eval")
