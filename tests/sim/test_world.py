"""sim/world.py: one seed, one world."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.config import ItemConfig, UserConfig, WorldConfig
from sim.world import item_catalog, make_world, user_catalog


def small_config(seed: int = 1) -> WorldConfig:
    return WorldConfig(seed=seed, latent_dim=4, users=UserConfig(n=30), items=ItemConfig(n=25, n_categories=4))


def _arrays(world):
    return {f.name: getattr(world, f.name) for f in dataclasses.fields(world) if f.name != "config"}


def test_same_seed_gives_identical_worlds():
    a, b = _arrays(make_world(small_config(1))), _arrays(make_world(small_config(1)))
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], np.ndarray):
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert a[name] == b[name], name


def test_different_seed_gives_different_worlds():
    a, b = make_world(small_config(1)), make_world(small_config(2))
    for name in ("user_taste", "user_activity", "item_latent", "item_quality", "item_content"):
        assert not np.array_equal(getattr(a, name), getattr(b, name)), name


def test_world_shapes_and_invariants():
    cfg = small_config()
    w = make_world(cfg)
    assert (w.n_users, w.n_items) == (30, 25)
    assert w.user_taste.shape == (30, 4) and w.item_latent.shape == (25, 4) and w.item_content.shape == (25, 4)
    np.testing.assert_allclose(np.linalg.norm(w.user_taste, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(w.item_latent, axis=1), 1.0, rtol=1e-5)
    assert w.user_activity.mean() == pytest.approx(1.0)
    assert (w.user_activity > 0).all()
    assert w.item_category.min() >= 0 and w.item_category.max() < 4
    assert len(w.item_title) == 25 and len(w.category_names) == 4
    for title, cat in zip(w.item_title, w.item_category):
        assert title.endswith(w.category_names[cat])


def test_catalogs_publish_only_public_columns():
    w = make_world(small_config())
    items, users = item_catalog(w), user_catalog(w)
    assert set(items) == {"item_id", "category", "title", "created_day", "content"}
    assert set(users) == {"user_id", "age_bucket", "region", "created_day"}
    np.testing.assert_array_equal(items["item_id"], np.arange(25))
    np.testing.assert_array_equal(users["user_id"], np.arange(30))
    np.testing.assert_array_equal(items["content"], w.item_content)
