"""components/ranking: the MLP ranker and the offline metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from components.features.definitions import FEATURES
from components.ranking import RANKERS, MLPConfig, MLPRanker, Samples
from components.ranking.metrics import auc, logloss

N_FEATURES = len(FEATURES)


def planted_samples(n: int, seed: int) -> Samples:
    """Label depends on feature 2 only; the other features are noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(2.5 * x[:, 2] - 1.0)))
    return Samples(x=x, label=(rng.random(n) < p).astype(np.float32),
                   position=rng.integers(0, 10, n).astype(np.int64),
                   request_id=np.arange(n, dtype=np.int64) // 5)


@pytest.fixture(scope="module")
def fitted() -> MLPRanker:
    return MLPRanker(MLPConfig(hidden=16, epochs=4, batch_size=256, lr=0.01)).fit(planted_samples(3000, 0))


def test_mlp_learns_a_planted_signal(fitted):
    test = planted_samples(2000, 1)
    prob = fitted.predict(test.x, test.position)
    assert prob.shape == (2000,)
    assert ((prob > 0) & (prob < 1)).all()
    assert auc(test.label, prob) > 0.75
    assert fitted.losses_[-1] < fitted.losses_[0]
    # the score rises with the planted feature, all else equal
    x = np.zeros((5, N_FEATURES), np.float32)
    x[:, 2] = np.linspace(-2, 2, 5)
    assert (np.diff(fitted.predict(x)) > 0).all()


def test_mlp_fit_is_reproducible_from_its_seed():
    data = planted_samples(500, 2)
    cfg = MLPConfig(hidden=8, epochs=2, batch_size=128, seed=3)
    a, b = MLPRanker(cfg).fit(data), MLPRanker(cfg).fit(data)
    np.testing.assert_array_equal(a.predict(data.x), b.predict(data.x))


def test_mlp_save_load_gives_identical_scores(fitted, make_users, tmp_path):
    fitted.save(tmp_path / "mlp")
    loaded = MLPRanker.load(tmp_path / "mlp")
    assert loaded.config == fitted.config
    x = planted_samples(100, 4).x
    np.testing.assert_array_equal(loaded.predict(x), fitted.predict(x))
    users = make_users([0, 1], recent=[[1, 4], []], impressions=[30, 0], clicks=[3, 0],
                       item_impressions=np.arange(12) * 10, item_clicks=np.arange(12))
    items = np.array([[0, 3, 5, -1], [2, 7, -1, -1]])
    s = fitted.score(users, items)
    assert s.shape == (2, 4)
    np.testing.assert_array_equal(loaded.score(users, items), s)
    # padding is never a candidate
    assert np.isneginf(s[items < 0]).all() and np.isfinite(s[items >= 0]).all()


def test_mlp_refuses_a_checkpoint_of_other_features(fitted, tmp_path):
    fitted.save(tmp_path / "mlp")
    ckpt = torch.load(tmp_path / "mlp" / "model.pt", weights_only=True)
    ckpt["features"] = ckpt["features"][:-1]
    torch.save(ckpt, tmp_path / "mlp" / "model.pt")
    with pytest.raises(ValueError, match="retrain"):
        MLPRanker.load(tmp_path / "mlp")


def test_mlp_load_of_a_missing_or_damaged_model_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nope")):
        MLPRanker.load(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"half a file")
    with pytest.raises(ValueError, match="re-run training"):
        MLPRanker.load(tmp_path / "bad")


def test_rankers_registry():
    assert RANKERS["mlp"] is MLPRanker


def test_samples_subset_keeps_rows_aligned():
    s = planted_samples(10, 0)
    mask = np.arange(10) % 3 == 0
    sub = s.subset(mask)
    np.testing.assert_array_equal(sub.x, s.x[mask])
    np.testing.assert_array_equal(sub.request_id, [0, 0, 1, 1])
    np.testing.assert_array_equal(sub.position, s.position[mask])


# ---- metrics ---------------------------------------------------------------------------------

def test_auc_against_a_hand_computed_value():
    label = np.array([1, 0, 1, 0, 1])
    score = np.array([0.9, 0.3, 0.4, 0.4, 0.8])
    # positive-negative pairs: 0.9 beats both, 0.8 beats both, 0.4 beats 0.3 and ties 0.4 -> 5.5 / 6
    assert auc(label, score) == pytest.approx(5.5 / 6)


def test_auc_extremes():
    label = np.array([0, 0, 1, 1])
    assert auc(label, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(label, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(label, np.full(4, 0.5)) == 0.5
    assert np.isnan(auc(np.ones(3), np.array([0.1, 0.2, 0.3])))
    assert np.isnan(auc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_logloss_against_a_hand_computed_value():
    label = np.array([1.0, 0.0])
    prob = np.array([0.8, 0.4])
    assert logloss(label, prob) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert np.isfinite(logloss(np.array([1.0]), np.array([0.0])))
