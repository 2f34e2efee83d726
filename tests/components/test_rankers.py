"""Coarse, DeepFM and DIN rankers: id admission, metrics, the coarse -> fine pipeline, batched equals single-request."""
from __future__ import annotations

import numpy as np
import pytest

from components.ranking import CoarseConfig, CoarseRanker, DINConfig, DINRanker
from components.ranking.ids import IdTable
from components.ranking.metrics import calibration, gauc
from components.recall import PopularRecaller
from components.serving import ArmConfig, Pipeline

def test_id_admission_shares_buckets_for_rare_and_new_ids():
    table = IdTable.fit(np.array([0, 0, 0, 1, 2, 2, 2]), n_ids=4, min_count=2, buckets=3)
    assert table.n_admitted == 2 and table.size == 2 + 3 + 1
    rows = table.lookup(np.array([0, 2, 1, 3, 7, -1]))
    assert rows[:2].tolist() == [0, 1]                   # admitted ids own a row
    assert rows[2] == 2 + 1 % 3 and rows[3] == 2 + 3 % 3 and rows[4] == 2 + 7 % 3   # rare and unseen: hashed
    assert rows[5] == table.padding


def test_gauc_and_calibration_by_hand():
    user = np.array([0, 0, 1, 1, 2])
    label = np.array([1, 0, 0, 1, 1], np.float32)
    score = np.array([0.9, 0.1, 0.8, 0.2, 0.5])
    assert gauc(user, label, score) == pytest.approx(0.5)    # user 0: 1, user 1: 0, user 2 skipped
    assert calibration(label, np.array([0.5, 0.5, 0.5, 0.5, 1.0])) == pytest.approx(1.0)


class Ranked:
    """A stub ranker scoring by a fixed table per item, counting the candidates it saw."""

    def __init__(self, table):
        self.table, self.widths = np.asarray(table, np.float32), []

    def score(self, users, items, ranks=None):
        self.widths.append(int((items >= 0).sum(axis=1).max()))
        return np.where(items >= 0, self.table[np.where(items >= 0, items, 0)], -np.inf)


def test_coarse_cuts_before_fine(make_users, make_train_data):
    pop = PopularRecaller().fit(make_train_data([(0, i, 0) for i in range(12)], day=0))
    coarse = Ranked(np.arange(12))                       # keeps the highest ids
    fine = Ranked(-np.arange(12))                        # prefers the lowest ids
    arm = ArmConfig(channels={"popular": 12}, coarse="coarse", coarse_keep=5, fine="deepfm")
    res = Pipeline(arm, 3, {"popular": pop}, fine, coarse).serve(make_users([0, 1]))
    assert coarse.widths == [12] and fine.widths == [5]
    assert res.items.tolist() == [[7, 8, 9]] * 2         # the fine order over the coarse survivors


def test_batched_and_single_request_slates_are_identical(make_users, make_train_data, taste_samples):
    from components.recall import ItemCFRecaller, SwingRecaller
    data = make_train_data([(u, (u * 5 + k) % 12, 0) for u in range(20) for k in range(4)], day=0)
    channels = {"popular": PopularRecaller().fit(data), "itemcf": ItemCFRecaller().fit(data),
                "swing": SwingRecaller().fit(data)}
    arm = ArmConfig(channels={"popular": 4, "itemcf": 4, "swing": 4}, coarse="coarse", coarse_keep=6, fine="din")
    pipe = Pipeline(arm, 4, channels, DINRanker(DINConfig(epochs=1)).fit(taste_samples),
                    CoarseRanker(CoarseConfig(epochs=1)).fit(taste_samples))
    recent = [[(u * 3) % 12, (u * 7 + 1) % 12] if u % 4 else [] for u in range(10)]
    batch = pipe.serve(make_users(range(10), recent=recent))
    for u in range(10):
        one = pipe.serve(make_users([u], recent=[recent[u]]))
        np.testing.assert_array_equal(one.items[0], batch.items[u])
        np.testing.assert_allclose(one.scores[0], batch.scores[u], rtol=1e-5)
        assert one.channels[0] == batch.channels[u]


def test_arm_keeps_the_old_ranker_key_as_fine():
    assert ArmConfig(channels={"popular": 5}, ranker="mlp").fine_ranker == "mlp"
    assert ArmConfig(channels={"popular": 5}, fine="din").fine_ranker == "din"


def test_full_stack_batched_and_single_request_slates_are_identical(make_users, make_train_data, taste_samples,
                                                                     one_thread):
    # configs/experiments/full.yaml's treatment arm: every channel it serves with, coarse, then DIN.
    from components.recall import (ColdStartRecaller, SASRecConfig, SASRecRecaller, SwingRecaller, TwoTowerConfig,
                                   TwoTowerRecaller)
    # Items 10 and 11 are never clicked, so the cold-start channel has something to recall.
    data = make_train_data([(u, (u * 5 + k) % 10, 0) for u in range(20) for k in range(4)], day=0)
    channels = {"popular": PopularRecaller().fit(data), "swing": SwingRecaller().fit(data),
                "two_tower": TwoTowerRecaller(TwoTowerConfig(dim=8, hidden=8, epochs=1)).fit(data),
                "sasrec": SASRecRecaller(SASRecConfig(dim=8, layers=1, epochs=1)).fit(data),
                "coldstart": ColdStartRecaller().fit(data)}
    arm = ArmConfig(channels={"popular": 3, "swing": 3, "two_tower": 3, "sasrec": 3, "coldstart": 2},
                    coarse="coarse", coarse_keep=8, fine="din")
    pipe = Pipeline(arm, 4, channels, DINRanker(DINConfig(epochs=1)).fit(taste_samples),
                    CoarseRanker(CoarseConfig(epochs=1)).fit(taste_samples))
    recent = [[(u * 3) % 10, (u * 7 + 1) % 10, u % 10][: u % 4] for u in range(12)]
    batch = pipe.serve(make_users(range(12), recent=recent))
    assert {c for row in batch.channels for slot in row for c in slot} >= {"two_tower", "sasrec"}
    for u in range(12):
        one = pipe.serve(make_users([u], recent=[recent[u]]))
        np.testing.assert_array_equal(one.items[0], batch.items[u], err_msg=f"user {u}")
        np.testing.assert_allclose(one.scores[0], batch.scores[u], rtol=1e-5)
        assert one.channels[0] == batch.channels[u]
