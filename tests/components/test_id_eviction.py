"""Id admission and stale-id eviction for the embedding tables of the rankers and the two-tower."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from common.typedconf import ConfigError, from_mapping
from components.ranking import DeepFMConfig, DeepFMRanker, DINConfig, DINRanker
from components.ranking.ids import IdTable
from components.recall import TwoTowerConfig, TwoTowerRecaller

TODAY = 10


def _events():
    """Ids 0..3, three events each: id 0 last seen today, 1 two days ago, 2 three days ago, 3 never."""
    ids = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    days = np.array([8, 9, 10, 6, 7, 8, 5, 6, 7])
    return ids, days


def test_an_id_unseen_for_more_than_n_days_loses_its_row_and_falls_back_to_its_bucket():
    ids, days = _events()
    kept = IdTable.fit(ids, 4, min_count=2, buckets=3, days=days)                   # eviction off
    assert kept.n_admitted == 3 and kept.lookup(np.array([2]))[0] == 2
    table = IdTable.fit(ids, 4, min_count=2, buckets=3, days=days, evict_days=2, today=TODAY)
    # Id 1 (last seen 2 days ago, N = 2) keeps a row; id 2 (unseen for N + 1 = 3 days) is evicted.
    assert table.n_admitted == 2 and table.size == 2 + 3 + 1
    rows = table.lookup(np.array([0, 1, 2, 3]))
    assert rows[:2].tolist() == [0, 1]
    assert rows[2] == 2 + 2 % 3 and rows[3] == 2 + 3 % 3                          # evicted, never seen: hashed
    # `today` defaults to the newest event's day.
    assert IdTable.fit(ids, 4, 2, 3, days, evict_days=2).rows.tolist() == table.rows.tolist()


def test_tables_are_a_function_of_their_events_not_of_their_order():
    ids, days = _events()
    order = np.random.default_rng(0).permutation(len(ids))
    a = IdTable.fit(ids, 4, 2, 3, days, 2, TODAY)
    b = IdTable.fit(ids[order], 4, 2, 3, days[order], 2, TODAY)
    assert a.rows.tolist() == b.rows.tolist() and a.n_admitted == b.n_admitted


def test_eviction_refuses_events_without_days_and_a_table_without_buckets_must_admit_all():
    ids, days = _events()
    with pytest.raises(ValueError, match="day of every event"):
        IdTable.fit(ids, 4, 2, 3, None, evict_days=1)
    with pytest.raises(ValueError, match="no hash buckets"):
        IdTable.fit(ids, 4, 2, 0)
    ident = IdTable.identity(4)
    assert ident.lookup(np.array([0, 3, 9, -1])).tolist() == [0, 3, 4, 4]         # unknown: padding


@pytest.mark.parametrize("cls, cfg", [(DeepFMRanker, DeepFMConfig(epochs=1, min_count=1, hash_buckets=4)),
                                      (DINRanker, DINConfig(epochs=1, min_count=1, hash_buckets=4))])
def test_rankers_evict_items_whose_last_impression_is_stale(cls, cfg, taste_samples, tmp_path):
    # Items 0..5 shown only on day 0, items 6..11 on day 3: with N = 2 the first six are stale.
    day = np.where(taste_samples.item_id < 6, 0, 3).astype(np.int64)
    samples = replace(taste_samples, day=day)
    full = cls(cfg).fit(samples)
    evicting = cls(replace(cfg, evict_days=2)).fit(samples)
    assert full.ids_.n_admitted == 12 and evicting.ids_.n_admitted == 6
    assert (evicting.ids_.lookup(np.arange(6)) >= 6).all()                         # buckets
    assert evicting.id_table_bytes() < full.id_table_bytes()
    again = cls(replace(cfg, evict_days=2)).fit(samples)
    assert again.ids_.rows.tolist() == evicting.ids_.rows.tolist()
    evicting.save(tmp_path / "r")
    loaded = cls.load(tmp_path / "r")
    assert loaded.ids_.rows.tolist() == evicting.ids_.rows.tolist()
    np.testing.assert_array_equal(loaded.predict_samples(samples), evicting.predict_samples(samples))


def test_two_tower_admits_and_evicts_by_clicks(make_train_data, tmp_path):
    # Users click items 0..5 on day 0 and items 6..9 on day 5; items 10, 11 are never clicked.
    clicks = [(u, (u + k) % 6, 0) for u in range(20) for k in range(3)] + \
             [(u, 6 + (u + k) % 4, 5) for u in range(20) for k in range(3)]
    data = make_train_data(clicks, day=5)
    cfg = TwoTowerConfig(dim=8, hidden=8, epochs=1)
    plain = TwoTowerRecaller(cfg).fit(data)
    assert plain.ids_.n_admitted == 12 and plain.item_tower_.id.num_embeddings == 12      # as before admission
    evicting = TwoTowerRecaller(replace(cfg, min_count=1, hash_buckets=2, evict_days=3)).fit(data)
    assert evicting.ids_.n_admitted == 4                                           # 6..9: clicked, fresh
    assert evicting.ids_.lookup(np.array([0, 6])).tolist() == [4 + 0 % 2, 0]
    assert evicting.item_tower_.id.num_embeddings == 4 + 2
    assert evicting.id_table_bytes() < plain.id_table_bytes()
    evicting.save(tmp_path / "tt")
    loaded = TwoTowerRecaller.load(tmp_path / "tt")
    recent = np.array([[6, 0, -1], [11, -1, -1]])
    np.testing.assert_array_equal(loaded.user_vectors(recent), evicting.user_vectors(recent))


def test_admission_knobs_are_checked_as_read():
    with pytest.raises(ConfigError, match="deepfm.evict_days"):
        from_mapping(DeepFMConfig, {"evict_days": -1}, "deepfm")
    with pytest.raises(ConfigError, match="two_tower.hash_buckets"):
        from_mapping(TwoTowerConfig, {"evict_days": 3}, "two_tower")
