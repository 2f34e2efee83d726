"""Recall channels beyond popular and item-CF: popular per category, Swing, two-tower + FAISS, SASRec, cold start."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from components.recall import (ColdStartConfig, ColdStartRecaller, PopularCategoryConfig,
                               PopularCategoryRecaller, SASRecConfig, SASRecRecaller, SwingConfig, SwingRecaller,
                               TwoTowerConfig, TwoTowerRecaller)
from components.recall.base import ModelFileError
from components.recall.faiss_index import IndexConfig, build_index, load_index, resolve_kind, save_index, search
from components.recall.history import chronological, click_sequences, prefix_windows
from components.recall.swing import swing_similarity
from components.types import Catalog, ItemFeatures, TrainData, UserBatch


def test_click_sequences_and_windows(make_train_data):
    data = make_train_data([(1, 5, 0), (0, 3, 0), (1, 6, 1), (0, 4, 1), (1, 7, 2)], day=2)
    assert [s.tolist() for s in click_sequences(data)] == [[3, 4], [5, 6, 7]]
    assert [s.tolist() for s in click_sequences(data, window_days=2)] == [[4], [6, 7]]
    hist, target = prefix_windows([np.array([3, 4]), np.array([5, 6, 7])], 2)
    assert hist.tolist() == [[3, -1], [5, -1], [6, 5]] and target.tolist() == [4, 6, 7]
    assert chronological(np.array([[7, 6, 5, -1], [-1, -1, -1, -1]]), 3).tolist() == [[5, 6, 7], [-1, -1, -1]]


def test_popular_category_follows_the_users_categories(make_train_data, make_users, tmp_path):
    # item i is in category i % 3; item 9 (cat 0) is the most popular, then 4 (cat 1), then 3 (cat 0)
    model = PopularCategoryRecaller(PopularCategoryConfig(decay=1.0)).fit(
        make_train_data([(0, 9, 1)] * 5 + [(0, 4, 1)] * 3 + [(0, 3, 1)] * 2, day=1))
    out = model.recall(make_users([0, 1], recent=[[4, 7], []]), 3)
    assert out.items[0, 0] == 4                       # a category-1 user: the top category-1 item first
    assert out.items[1, :3].tolist() == [9, 4, 3]     # no history: global popularity
    model.save(tmp_path / "pc")
    loaded = PopularCategoryRecaller.load(tmp_path / "pc")
    np.testing.assert_array_equal(loaded.recall(make_users([0], recent=[[4]]), 3).items,
                                  model.recall(make_users([0], recent=[[4]]), 3).items)


def test_swing_matches_the_definition_by_brute_force():
    rng = np.random.default_rng(1)
    a = (rng.random((8, 6)) < 0.5).astype(np.float32)
    cfg = SwingConfig(alpha=1.0, user_weight=True)
    fast = swing_similarity(sp.csr_matrix(a), cfg).toarray()
    slow = np.zeros((6, 6))
    size = a.sum(axis=1)
    for u in range(8):
        for v in range(u + 1, 8):
            common = np.flatnonzero(a[u] * a[v])
            for i in common:
                for j in common:
                    if i != j:
                        slow[i, j] += 1 / (1 + len(common)) / np.sqrt(size[u] * size[v])
    np.testing.assert_allclose(fast, slow, rtol=1e-5)


def test_swing_prefers_pairs_from_users_who_share_little(make_users, make_train_data, tmp_path):
    # Items 1 and 2 are co-clicked by users 0, 1 who share nothing else; items 3 and 4 by users 2, 3
    # who also share 5, 6, 7: same co-click count, but Swing ranks 2 above 4 from a history of [1, 3].
    clicks = [(0, 1, 0), (0, 2, 0), (1, 1, 0), (1, 2, 0)]
    clicks += [(u, i, 0) for u in (2, 3) for i in (3, 4, 5, 6, 7)]
    model = SwingRecaller(SwingConfig(user_weight=False)).fit(make_train_data(clicks, day=0))
    out = model.recall(make_users([9], recent=[[1, 3]]), 2)
    assert out.items[0, 0] == 2
    assert model.sim_[1, 2] == pytest.approx(1 / 3) and model.sim_[3, 4] == pytest.approx(1 / 6)
    model.save(tmp_path / "sw")
    loaded = SwingRecaller.load(tmp_path / "sw")
    assert (loaded.sim_ != model.sim_).nnz == 0 and loaded.config == model.config


def _clustered_world(n_users=120, n_items=40, length=8, seed=0):
    """Two groups of items (even, odd ids); each user clicks in one group only, in id order."""
    rng = np.random.default_rng(seed)
    cat = Catalog(item_id=np.arange(n_items, dtype=np.int64), category=(np.arange(n_items) % 2).astype(np.int32),
                  content=np.eye(2, dtype=np.float32)[np.arange(n_items) % 2] + 0.01)
    rows = []
    for u in range(n_users):
        group = u % 2
        start = rng.integers(0, n_items // 2 - length)
        for t, k in enumerate(range(start, start + length)):
            rows.append((u, 2 * k + group, t))
    arr = np.asarray(rows)
    return TrainData(day=length, catalog=cat, click_user=arr[:, 0], click_item=arr[:, 1],
                     click_day=np.zeros(len(arr), np.int32), click_ts=arr[:, 2]), cat


def _users(cat, recent):
    n = cat.n_items
    b = len(recent)
    rec = np.full((b, 20), -1, np.int64)
    for i, r in enumerate(recent):
        rec[i, : len(r)] = r
    return UserBatch(user_ids=np.arange(b), impressions=np.zeros(b, np.int64), clicks=np.zeros(b, np.int64),
                     recent=rec, items=ItemFeatures(cat, np.zeros(n, np.int64), np.zeros(n, np.int64)))


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_index_finds_the_inner_product_top_and_survives_save(kind, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    cfg = IndexConfig(kind=kind, ivf_nlist=4, ivf_nprobe=4)
    ids, scores = search(build_index(x, cfg), q, 3)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :3]
    np.testing.assert_array_equal(ids, exact)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, exact, axis=1), rtol=1e-4)
    save_index(build_index(x, cfg), tmp_path / "i.faiss")
    np.testing.assert_array_equal(search(load_index(tmp_path / "i.faiss", cfg), q, 3)[0], exact)


def test_faiss_auto_is_exact_when_small_and_hnsw_when_large():
    assert resolve_kind(IndexConfig(exact_max_items=100), 100) == "flat"
    assert resolve_kind(IndexConfig(exact_max_items=100), 101) == "hnsw"
    assert resolve_kind(IndexConfig(kind="ivf"), 5) == "ivf"


def test_two_tower_learns_the_groups_and_reloads_identically(tmp_path):
    data, cat = _clustered_world()
    model = TwoTowerRecaller(TwoTowerConfig(dim=8, hidden=16, epochs=20, batch_size=64, lr=1e-2)).fit(data)
    assert model.losses_[-1] < model.losses_[0]
    out = model.recall(_users(cat, [[0, 2, 4], [1, 3, 5]]), 10)
    # the nearest items are the user's own group (and the items right after the history)
    assert (out.items[0, :3] % 2 == 0).all() and (out.items[1, :3] % 2 == 1).all()
    model.save(tmp_path / "tt")
    assert (tmp_path / "tt" / "items.faiss").is_file()
    again = TwoTowerRecaller.load(tmp_path / "tt").recall(_users(cat, [[0, 2, 4], [1, 3, 5]]), 10)
    np.testing.assert_array_equal(again.items, out.items)
    with pytest.raises(ModelFileError, match="re-run training"):
        TwoTowerRecaller.load(tmp_path / "missing")
    (tmp_path / "tt" / "model.pt").write_bytes(b"damaged")
    with pytest.raises(ModelFileError, match="re-run training"):
        TwoTowerRecaller.load(tmp_path / "tt")


def test_sasrec_learns_the_next_item_and_reloads_identically(tmp_path):
    data, cat = _clustered_world(n_users=200)
    model = SASRecRecaller(SASRecConfig(dim=16, heads=2, layers=1, max_len=8, dropout=0.0, epochs=30,
                                        batch_size=64, lr=5e-3)).fit(data)
    assert model.losses_[-1] < model.losses_[0]
    # users walk up their group in steps of 2: after 10, 12, 14 comes 16
    out = model.recall(_users(cat, [[14, 12, 10], []]), 5)
    assert 16 in out.items[0, :3].tolist()
    assert (out.items[1] == -1).all()                 # no history: nothing to attend to
    model.save(tmp_path / "s")
    np.testing.assert_array_equal(SASRecRecaller.load(tmp_path / "s").recall(_users(cat, [[14, 12, 10]]), 5).items,
                                  out.items[:1])


def test_sasrec_warm_start_grows_the_catalogue_and_continues_from_yesterdays_weights(tmp_path):
    cfg = SASRecConfig(dim=16, heads=2, layers=1, max_len=8, dropout=0.0, epochs=30, batch_size=64, lr=5e-3,
                       warm_epochs=1)
    small, _ = _clustered_world(n_users=200, n_items=36)
    SASRecRecaller(cfg).fit(small).save(tmp_path / "day0")
    data, cat = _clustered_world(n_users=200, n_items=40, seed=1)          # four items born overnight
    warm = SASRecRecaller(cfg).warm_from(tmp_path / "day0").fit(data)
    cold = SASRecRecaller(cfg).fit(data)
    one = SASRecRecaller(SASRecConfig(**{**vars(cfg), "epochs": 1})).fit(data)
    assert warm.metrics_["warm_start"] == 1 and warm.metrics_["epochs_run"] == 1
    assert cold.metrics_["warm_start"] == 0 and cold.metrics_["epochs_run"] == 30
    # One epoch from yesterday's weights is far ahead of one epoch from scratch.
    assert warm.losses_[0] < one.losses_[0] - 0.5
    assert 16 in warm.recall(_users(cat, [[14, 12, 10]]), 5).items[0, :3].tolist()
    assert warm.net_.item.weight.shape[0] == 41                             # 40 items and the padding row
    # Another shape, or no model yesterday, trains from scratch.
    other = SASRecRecaller(SASRecConfig(**{**vars(cfg), "dim": 8, "epochs": 2})).warm_from(tmp_path / "day0").fit(data)
    missing = SASRecRecaller(SASRecConfig(**{**vars(cfg), "epochs": 2})).warm_from(tmp_path / "nothing").fit(data)
    assert other.metrics_["epochs_run"] == 2 and missing.metrics_["epochs_run"] == 2
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "model.pt").write_bytes(b"not a checkpoint")
    damaged = SASRecRecaller(SASRecConfig(**{**vars(cfg), "epochs": 2})).warm_from(tmp_path / "damaged").fit(data)
    assert damaged.metrics_ == {**damaged.metrics_, "warm_start": 0.0, "epochs_run": 2.0}
    with pytest.raises(ModelFileError, match="re-run training"):
        SASRecRecaller.load(tmp_path / "damaged")


def test_sasrec_batched_equals_one_by_one():
    data, cat = _clustered_world(n_users=40)
    model = SASRecRecaller(SASRecConfig(dim=8, layers=1, max_len=6, epochs=1)).fit(data)
    recents = [[3, 1], [], [10, 8, 6, 4, 2, 0, 12]]
    batched = model.recall(_users(cat, recents), 4).items
    single = np.concatenate([model.recall(_users(cat, [r]), 4).items for r in recents])
    np.testing.assert_array_equal(batched, single)


def test_coldstart_returns_only_unclicked_items_nearest_the_profile(make_users, make_train_data, catalog):
    model = ColdStartRecaller(ColdStartConfig(category_weight=0.0)).fit(
        make_train_data([(0, i, 0) for i in range(8)], day=0))
    out = model.recall(make_users([0, 1], recent=[[0], []]), 4)
    assert set(out.items[0]) == {8, 9, 10, 11} and set(out.items[1]) == {8, 9, 10, 11}
    content = catalog.content / np.linalg.norm(catalog.content, axis=1, keepdims=True)
    assert out.items[0, 0] == 8 + np.argmax(content[8:] @ content[0])
    assert out.items[1].tolist() == [11, 10, 9, 8]    # no history: newest first


def test_coldstart_includes_items_born_after_training(make_users, make_train_data, catalog):
    small = Catalog(catalog.item_id[:6], catalog.category[:6], catalog.content[:6])
    model = ColdStartRecaller().fit(make_train_data([(0, i, 0) for i in range(6)], day=0, cat=small))
    out = model.recall(make_users([0], recent=[[1]]), 10)  # the serving catalogue has 12 items
    assert sorted(out.items[0][out.items[0] >= 0].tolist()) == [6, 7, 8, 9, 10, 11]


def test_content_i2i_recalls_the_content_neighbours_of_recent_clicks(make_train_data, make_users, tmp_path):
    from components.recall import ContentI2IConfig, ContentI2IRecaller
    from components.recall.content_i2i import content_neighbours

    # Two product lines on the unit circle: items 0-4 near angle 0, items 5-9 near angle pi/2.
    spread = np.array([0.0, 0.03, 0.1, 0.18, 0.3])                                 # no ties in distance
    angle = np.r_[spread, np.pi / 2 + spread]
    content = np.c_[np.cos(angle), np.sin(angle)].astype(np.float32) * 3.0        # any norm
    cat = Catalog(item_id=np.arange(10), category=np.zeros(10, np.int32), content=content,
                  title=np.array([f"i{i}" for i in range(10)], dtype=object))
    cfg = ContentI2IConfig(neighbours=3, history=2, recency_decay=1.0)
    sim = content_neighbours(content, cfg)
    cos = (content / 3.0) @ (content / 3.0).T
    for i in range(10):                                       # brute force: the 3 closest others
        row = sim.getrow(i)
        expect = [j for j in np.argsort(-cos[i], kind="stable") if j != i][:3]
        assert set(row.indices.tolist()) == set(expect)
        np.testing.assert_allclose(row.toarray()[0, expect], np.exp(8.0 * (cos[i, expect] - 1)), rtol=1e-5)
    # No clicks at all: the channel still recalls, from content alone (day 0, unclicked items).
    model = ContentI2IRecaller(cfg).fit(make_train_data(np.zeros((0, 3)), day=0, cat=cat))
    out = model.recall(make_users([0, 1, 2], recent=[[2], [7, 1], []]), 3)
    assert set(out.items[0].tolist()) <= {0, 1, 3, 4} and -1 not in out.items[0]
    assert set(out.items[1, :2].tolist()) <= {5, 6, 8, 9}       # the newest click's line first
    assert (out.items[2] == -1).all()                            # no history, no candidates
    model.save(tmp_path / "ci")
    loaded = ContentI2IRecaller.load(tmp_path / "ci")
    np.testing.assert_array_equal(loaded.recall(make_users([1], recent=[[7, 1]]), 3).items, out.items[1:2])
