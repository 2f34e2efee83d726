"""Serving requests it has never seen the like of: unknown users, an empty catalogue."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.features.store import build_features
from components.features.definitions import FEATURES
from components.features.store import FeatureStore, blank_columns, load_catalog
from components.lake import Lake
from components.ranking import MLPConfig, MLPRanker, Samples
from components.recall import CHANNELS
from components.experiment import load_experiment
from components.serving import Pipeline
from components.types import ItemFeatures, TrainData

EXP = load_experiment("default")
ARMS = {**EXP.arms, "logging": EXP.logging_policy}


def _ranker() -> MLPRanker:
    x = np.random.default_rng(0).standard_normal((200, len(FEATURES))).astype(np.float32)
    return MLPRanker(MLPConfig(hidden=4, epochs=1, batch_size=50)).fit(
        Samples(x=x, label=(x[:, 0] > 0).astype(np.float32), position=np.zeros(200, np.int64),
                request_id=np.arange(200)))


def _pipelines(data: TrainData, tmp_path) -> dict[str, Pipeline]:
    """Every arm of the default experiment, its channels saved and loaded as serving does."""
    channels = {}
    for name in EXP.channels_needed():
        CHANNELS[name](getattr(EXP.models, name)).fit(data).save(tmp_path / name)
        channels[name] = CHANNELS[name].load(tmp_path / name)
    ranker = _ranker()
    return {arm: Pipeline(cfg, EXP.slate_size, channels, ranker if cfg.ranker != "none" else None)
            for arm, cfg in ARMS.items()}


def test_unknown_users_are_served_as_new_by_the_fallback_channels(co_click_data, catalog, tmp_path):
    n = catalog.n_items
    items = ItemFeatures(catalog=catalog, impressions=np.zeros(n, np.int64), clicks=np.zeros(n, np.int64),
                         columns=blank_columns("features_item", n) | blank_columns("stream_item", n))
    user_columns = blank_columns("features_user", 1) | {"u_impressions": np.array([9]), "u_clicks": np.array([2])}
    store = FeatureStore.by_hand(day=5, items=items, user_ids=[0], user_columns=user_columns,
                                 recent=[np.array([1, 2], np.int64)])
    batch = store.user_batch(np.array([0, 123456, -7]), np.array([10, 11, 12]))
    assert batch.impressions.tolist() == [9, 0, 0] and (batch.recent[1:] == -1).all()
    for arm, pipe in _pipelines(co_click_data, tmp_path).items():
        res = pipe.serve(batch)
        for row in (1, 2):       # no history: item-CF has nothing, popularity (and exploration) fill
            shown = res.items[row][res.items[row] >= 0]
            assert len(shown) == min(EXP.slate_size, n), arm
            assert len(set(shown.tolist())) == len(shown)
            assert all("itemcf" not in ch for ch in res.channels[row]), arm


@pytest.fixture
def empty_lake(tmp_path) -> Lake:
    """A lake whose catalogue has no items yet, but has users."""
    lake = Lake(tmp_path / "lake")
    lake.write("items", 0, pa.table({
        "day": pa.array([], pa.int32()), "item_id": pa.array([], pa.int64()),
        "category": pa.array([], pa.int32()), "title": pa.array([], pa.string()),
        "created_day": pa.array([], pa.int32()), "content": pa.array([], pa.list_(pa.float32()))}))
    lake.write("users", 0, pa.table({"day": [0, 0], "user_id": [0, 1], "age_bucket": [1, 2],
                                     "region": [0, 1], "created_day": [0, 0]}))
    build_features(lake, 0)
    return lake


def test_an_empty_catalogue_gives_empty_slates_not_a_crash(empty_lake, tmp_path):
    store = FeatureStore.load(empty_lake, 0)
    none = np.zeros(0, np.int64)
    data = TrainData(day=0, catalog=load_catalog(empty_lake, 0), click_user=none, click_item=none,
                     click_day=none.astype(np.int32), click_ts=none)
    for arm, pipe in _pipelines(data, tmp_path / "models").items():
        res = pipe.serve(store.user_batch(np.array([0, 1, 99]), np.array([1, 2, 3])))
        assert res.items.shape == (3, EXP.slate_size), arm
        assert (res.items == -1).all(), arm
        assert np.isfinite(res.scores).all()
        assert res.channels == [[()] * EXP.slate_size] * 3
