"""Small hand-built inputs shared by the component tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from components.features.store import blank_columns
from components.ranking import Samples
from components.ranking.base import serving_features
from components.types import Catalog, ItemFeatures, TrainData, UserBatch, pad_rows


@pytest.fixture
def catalog() -> Catalog:
    """12 items in 3 categories (item i is in category i % 3), 4-d content vectors."""
    n = 12
    rng = np.random.default_rng(0)
    return Catalog(item_id=np.arange(n, dtype=np.int64),
                   category=(np.arange(n) % 3).astype(np.int32),
                   content=rng.standard_normal((n, 4)).astype(np.float32))


@pytest.fixture
def make_users(catalog):
    """Factory: UserBatch for user ids with their recent clicks (newest first)."""

    def make(user_ids, recent=None, width=5, impressions=None, clicks=None, item_impressions=None,
             item_clicks=None):
        user_ids = np.asarray(user_ids, np.int64)
        b = len(user_ids)
        recent = [[] for _ in range(b)] if recent is None else recent
        n = catalog.n_items
        items = ItemFeatures(
            catalog=catalog,
            impressions=np.zeros(n, np.int64) if item_impressions is None else np.asarray(item_impressions),
            clicks=np.zeros(n, np.int64) if item_clicks is None else np.asarray(item_clicks),
            columns=blank_columns("features_item", n) | blank_columns("stream_item", n),
        )
        return UserBatch(
            user_ids=user_ids,
            impressions=np.zeros(b, np.int64) if impressions is None else np.asarray(impressions, np.int64),
            clicks=np.zeros(b, np.int64) if clicks is None else np.asarray(clicks, np.int64),
            recent=pad_rows([np.asarray(r, np.int64) for r in recent], width, -1, np.int64),
            items=items,
            features=blank_columns("features_user", b) | blank_columns("stream", b),
        )

    return make


@pytest.fixture
def make_train_data(catalog):
    """Factory: TrainData from (user, item, day) click triples; ts is day * 86400 + row index."""

    def make(clicks, day, cat=None):
        arr = np.asarray(clicks, np.int64).reshape(-1, 3)
        return TrainData(day=day, catalog=cat or catalog,
                         click_user=arr[:, 0].copy(), click_item=arr[:, 1].copy(),
                         click_day=arr[:, 2].astype(np.int32),
                         click_ts=arr[:, 2] * 86_400 + np.arange(len(arr)))

    return make


@pytest.fixture
def co_click_data(make_train_data):
    """Users 0 and 1 co-click items 1 and 2, user 1 also item 3; users 2 and 3 click 4 and 5."""
    return make_train_data(
        [(0, 1, 3), (0, 2, 3),
         (1, 1, 3), (1, 2, 4), (1, 3, 4),
         (2, 4, 4), (2, 5, 4), (3, 4, 4), (3, 5, 4),
         (4, 0, 4), (4, 0, 4), (5, 0, 3), (6, 7, 2)],
        day=4,
    )


@pytest.fixture
def one_thread():
    """Tiny torch models train several times faster on one thread than on a busy machine's all."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def taste_samples(make_users, catalog):
    """Users click items of their category only: user u likes category u % 3 (item i is in i % 3)."""
    rng = np.random.default_rng(0)
    n = 3000
    users = rng.integers(0, 30, n)
    items = rng.integers(0, 12, n)
    recent = [[(u % 3) + 3 * k for k in range(3)] for u in users]
    batch = make_users(users, recent=recent, width=5)
    x = serving_features(batch, items[:, None])[:, 0]
    label = ((items % 3) == (users % 3)).astype(np.float32)
    return Samples(x=x, label=label, position=np.zeros(n, np.int64), request_id=np.arange(n),
                   item_id=items.astype(np.int64), user_id=users.astype(np.int64), recent=batch.recent,
                   catalog=catalog)
