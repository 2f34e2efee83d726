"""Every registered model, RecBole style: each recall channel and each ranker trains on tiny data,
serves, is saved without pickles and reloads to the same output."""
from __future__ import annotations

import numpy as np
import pytest

from components.ranking import RANKERS, CoarseConfig, DeepFMConfig, DINConfig, MLPConfig
from components.ranking.metrics import gauc
from components.recall import CHANNELS, SASRecConfig, TwoTowerConfig
from components.recall.base import ModelFileError

# Small enough to train in a second, large enough to learn the taste samples.
SMALL_RANKERS = {"coarse": CoarseConfig(epochs=10, batch_size=256), "deepfm": DeepFMConfig(epochs=8, min_count=1),
                 "din": DINConfig(epochs=8, min_count=1), "mlp": MLPConfig(hidden=16, epochs=10, batch_size=256)}


def test_every_registered_ranker_has_a_small_config():
    assert set(SMALL_RANKERS) == set(RANKERS)


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_every_ranker_learns_taste_and_reloads_identically(name, taste_samples, make_users, tmp_path):
    cls, cfg = RANKERS[name], SMALL_RANKERS[name]
    assert cls.name == name
    model = cls(cfg).fit(taste_samples)
    assert model.losses_[-1] < model.losses_[0]
    users = make_users([0, 1], recent=[[0, 3, 6], [1, 4, 7]])
    items = np.array([[9, 10, 11, -1], [9, 10, 11, -1]])
    s = model.score(users, items)
    assert s.shape == (2, 4) and np.isneginf(s[:, 3]).all()
    assert s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]      # each user's own category first
    prob = model.predict_samples(taste_samples)
    assert gauc(taste_samples.user_id, taste_samples.label, prob) > 0.9
    model.save(tmp_path / cls.name)
    np.testing.assert_allclose(cls.load(tmp_path / cls.name).score(users, items), s, rtol=1e-6)


# ---- recall channels ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_channel_fits_recalls_and_survives_save_load(name, co_click_data, make_users, tmp_path):
    cls = CHANNELS[name]
    model = cls()
    assert model.fit(co_click_data) is model
    assert model.name == name
    users = make_users([0, 1, 2, 3], recent=[[1], [4, 0], [], [7, 3, 2]])
    out = model.recall(users, 6)
    assert out.items.shape == out.scores.shape == (4, 6)
    assert out.items.dtype == np.int64
    assert ((out.items >= -1) & (out.items < 12)).all()
    assert np.isfinite(out.scores).all()
    for row in out.items.tolist():
        shown = [i for i in row if i >= 0]
        assert len(shown) == len(set(shown))
    model.save(tmp_path / name)
    loaded = cls.load(tmp_path / name)
    assert type(loaded) is cls and loaded.config == model.config
    again = loaded.recall(users, 6)
    np.testing.assert_array_equal(again.items, out.items)
    np.testing.assert_array_equal(again.scores, out.scores)
    assert not list((tmp_path / name).glob("*.pkl"))


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_channel_refuses_a_missing_model(name, tmp_path):
    with pytest.raises(ModelFileError, match=str(tmp_path)):
        CHANNELS[name].load(tmp_path / "nothing-here")


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_channel_serves_a_new_catalog_with_no_clicks(name, make_train_data, make_users):
    # day 0 of a campaign: the logging policy is fitted on nothing
    model = CHANNELS[name]().fit(make_train_data([], day=-1))
    out = model.recall(make_users([0, 1]), 3)
    assert out.items.shape == (2, 3)


def test_every_registered_channel_fits_recalls_and_reloads(tmp_path, co_click_data, make_users):
    small = {"two_tower": TwoTowerConfig(dim=4, hidden=8, epochs=1),
             "sasrec": SASRecConfig(dim=4, heads=1, layers=1, max_len=4, epochs=1)}
    users = make_users([0, 1], recent=[[1, 2], []])
    for name, cls in CHANNELS.items():
        model = (cls(small[name]) if name in small else cls()).fit(co_click_data)
        out = model.recall(users, 3)
        assert out.items.shape == out.scores.shape == (2, 3), name
        assert out.items.dtype == np.int64 and ((out.items >= -1) & (out.items < 12)).all(), name
        model.save(tmp_path / name)
        np.testing.assert_array_equal(cls.load(tmp_path / name).recall(users, 3).items, out.items, err_msg=name)
