"""sim/world.py: one seed, one world; cohorts arrive daily; a category hierarchy; titles that tell."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.config import ItemConfig, UserConfig, WorldConfig
from sim.world import AXIS_WORDS, item_catalog, make_world, user_catalog


def config(seed: int = 1, **users) -> WorldConfig:
    return WorldConfig(seed=seed, latent_dim=4, collab_dim=3,
                       users=UserConfig(n=30, new_per_day=4, **users),
                       items=ItemConfig(n=25, new_per_day=3, n_categories=4, subcategories=2))


def _arrays(world):
    return {f.name: getattr(world, f.name) for f in dataclasses.fields(world) if f.name != "config"}


def test_same_seed_gives_identical_worlds():
    a, b = _arrays(make_world(config(1), 2)), _arrays(make_world(config(1), 2))
    for name in a:
        if isinstance(a[name], np.ndarray):
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert a[name] == b[name], name


def test_different_seed_gives_different_worlds():
    a, b = make_world(config(1)), make_world(config(2))
    for name in ("user_taste", "user_collab", "user_activity", "item_latent", "item_quality", "item_content"):
        assert not np.array_equal(getattr(a, name), getattr(b, name)), name


def test_cohorts_arrive_daily_and_never_change_the_past():
    w1, w3 = make_world(config(), 1), make_world(config(), 3)
    assert (w1.n_users, w1.n_items) == (34, 28)
    assert (w3.n_users, w3.n_items) == (42, 34)
    np.testing.assert_array_equal(np.bincount(w3.user_created_day), [30, 4, 4, 4])
    np.testing.assert_array_equal(np.bincount(w3.item_created_day), [25, 3, 3, 3])
    for name in ("user_taste", "user_collab", "user_activity", "user_created_day"):
        np.testing.assert_array_equal(getattr(w3, name)[:w1.n_users], getattr(w1, name), err_msg=name)
    for name in ("item_latent", "item_collab", "item_quality", "item_category", "item_content"):
        np.testing.assert_array_equal(getattr(w3, name)[:w1.n_items], getattr(w1, name), err_msg=name)
    assert w3.item_title[:w1.n_items] == w1.item_title


def test_world_shapes_and_invariants():
    w = make_world(config())
    assert w.user_taste.shape == (30, 4) and w.user_collab.shape == (30, 3)
    assert w.item_latent.shape == (25, 4) and w.item_content.shape == (25, 4) and w.item_collab.shape == (25, 3)
    np.testing.assert_allclose(np.linalg.norm(w.user_taste, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(w.item_latent, axis=1), 1.0, rtol=1e-5)
    assert (w.user_activity > 0).all()
    assert w.item_category.min() >= 0 and w.item_category.max() < 8
    assert len(w.category_names) == 8 and len(set(w.category_names)) == 8


def test_hierarchy_items_sit_near_their_leaf_and_leaves_near_their_parent():
    cfg = WorldConfig(seed=4, latent_dim=16, items=ItemConfig(n=3000, n_categories=5, subcategories=3, spread=0.5))
    w = make_world(cfg)
    np.testing.assert_array_equal(w.leaf_parent, np.repeat(np.arange(5), 3))
    sim = w.item_latent @ w.leaf_centre.T                                           # [I, L]
    own = sim[np.arange(w.n_items), w.item_category]
    assert (sim.argmax(axis=1) == w.item_category).mean() > 0.8
    siblings = w.leaf_parent[sim.argsort(axis=1)[:, -2]] == w.leaf_parent[w.item_category]
    assert siblings.mean() > 0.5          # the runner-up leaf is usually a sibling under the same parent
    assert own.mean() > 0.7


def test_titles_carry_category_and_attributes():
    w = make_world(config())
    for i, title in enumerate(w.item_title):
        assert title.endswith(w.category_names[w.item_category[i]])
        axis = int(np.argmax(np.abs(w.item_latent[i])))
        assert AXIS_WORDS[axis][int(w.item_latent[i, axis] > 0)] in title.split()


@pytest.mark.parametrize("law, knob", [("lognormal", {"activity_sigma": 1.2}), ("pareto", {"activity_alpha": 2.5})])
def test_activity_is_heavy_tailed_with_mean_one(law, knob):
    cfg = WorldConfig(seed=3, latent_dim=2, users=UserConfig(n=200_000, activity=law, **knob),
                      items=ItemConfig(n=5, n_categories=1))
    a = make_world(cfg).user_activity
    assert a.mean() == pytest.approx(1.0, abs=0.05)
    top = np.sort(a)[-len(a) // 100:]
    assert top.sum() / a.sum() > 0.05          # the top 1 % of users make more than 5 % of the activity


def test_users_favour_big_categories_with_their_taste():
    cfg = WorldConfig(seed=8, latent_dim=16, users=UserConfig(n=5000, favourite_categories=1, taste_noise=0.2),
                      items=ItemConfig(n=500, n_categories=10, category_skew=1.0))
    w = make_world(cfg)
    top_of_user = w.leaf_parent[(w.user_taste @ w.leaf_centre.T).argmax(axis=1)]
    counts = np.bincount(top_of_user, minlength=10)
    assert counts[0] > 2 * counts[-1]


def test_catalogs_publish_only_public_columns_of_the_days_arrivals():
    w = make_world(config(), 2)
    items, users = item_catalog(w), user_catalog(w)
    assert set(items) == {"item_id", "category", "title", "created_day", "content"}
    assert set(users) == {"user_id", "age_bucket", "region", "created_day"}
    np.testing.assert_array_equal(items["item_id"], np.arange(w.n_items))
    np.testing.assert_array_equal(items["content"], w.item_content)
    day2 = item_catalog(w, 2)
    np.testing.assert_array_equal(day2["item_id"], np.arange(28, 31))
    assert (day2["created_day"] == 2).all() and len(day2["title"]) == 3
    np.testing.assert_array_equal(user_catalog(w, 1)["user_id"], np.arange(30, 34))
