"""Users and items: hidden tastes over a category hierarchy, and the public catalog they publish.

The world is drawn in cohorts: the day-0 population, then the users and items arriving on each later
day. A cohort depends only on (seed, day), so the world through day d is the same whichever day it
is built on. What changes over time (drifting tastes, fatigue, popularity, churn) is not here but in
sim/state.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.config import SCENARIO_DIR, WorldConfig
from sim.rng import stream
from sim.transitions import Transitions, generated_edges

CATEGORY_NOUNS = (
    "serum", "lipstick", "shampoo", "moisturiser", "mascara", "perfume", "cleanser", "sunscreen",
    "nail polish", "conditioner", "eyeliner", "face mask", "toner", "foundation", "body lotion",
    "hair oil", "blush", "lip balm", "eye cream", "exfoliator", "concealer", "bath salt",
    "hand cream", "dry shampoo",
)
SUBCATEGORY_WORDS = ("everyday", "night", "travel", "sport", "kids", "men's", "salon", "sensitive",
                     "summer", "winter", "gift set", "refill")
# One word pair per latent axis: the sign of an item's coordinate picks the word, so titles
# carry the item's position in taste space and a text encoder can recover it.
AXIS_WORDS = (
    ("matte", "glossy"), ("floral", "woody"), ("gentle", "intense"), ("classic", "trendy"),
    ("vegan", "clinical"), ("budget", "luxury"), ("light", "rich"), ("fresh", "warm"),
    ("natural", "bold"), ("daily", "festive"), ("unscented", "fragrant"), ("mini", "family-size"),
    ("hydrating", "mattifying"), ("soft", "vivid"), ("organic", "advanced"), ("cool", "sunny"),
)


COHORT_CHUNK = 65_536   # users whose favourite categories are drawn at a time


@dataclass(frozen=True)
class World:
    """The world's static truth (tastes, quality) and its public catalog, through one day's arrivals."""

    config: WorldConfig
    through_day: int
    leaf_parent: np.ndarray       # [L] top-level category of each leaf category
    leaf_centre: np.ndarray       # [L, d] hidden
    user_taste: np.ndarray        # [U, d] hidden, unit norm: taste on arrival (drift is state)
    user_collab: np.ndarray       # [U, c] hidden collaborative factors
    user_activity: np.ndarray     # [U] hidden, mean 1
    user_age_bucket: np.ndarray   # [U] public
    user_region: np.ndarray       # [U] public
    user_created_day: np.ndarray  # [U] public
    item_latent: np.ndarray       # [I, d] hidden, unit norm
    item_collab: np.ndarray       # [I, c] hidden
    item_quality: np.ndarray      # [I] hidden
    item_lateness: np.ndarray     # [I] hidden: when in the world's time the item belongs (BehaviorConfig.lifecycle)
    item_category: np.ndarray     # [I] public: the leaf category
    item_content: np.ndarray      # [I, d] public: a noisy view of item_latent
    item_title: tuple[str, ...]   # [I] public
    item_created_day: np.ndarray  # [I] public
    category_names: tuple[str, ...]  # [L] leaf names, e.g. "night serum"
    item_next: Transitions        # [I, I] hidden: where a user goes after each item

    @property
    def n_users(self) -> int:
        return len(self.user_taste)

    @property
    def n_items(self) -> int:
        return len(self.item_latent)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _category_names(n_top: int, n_sub: int) -> tuple[str, ...]:
    names = []
    for c in range(n_top):
        noun = CATEGORY_NOUNS[c % len(CATEGORY_NOUNS)]
        noun = f"{noun} {c // len(CATEGORY_NOUNS) + 1}" if c >= len(CATEGORY_NOUNS) else noun
        for s in range(n_sub):
            word = SUBCATEGORY_WORDS[s % len(SUBCATEGORY_WORDS)]
            word = f"{word} {s // len(SUBCATEGORY_WORDS) + 1}" if s >= len(SUBCATEGORY_WORDS) else word
            names.append(noun if n_sub == 1 else f"{word} {noun}")
    return tuple(names)


def _titles(latent: np.ndarray, leaf: np.ndarray, names: tuple[str, ...]) -> list[str]:
    d = latent.shape[1]
    strongest = np.argsort(-np.abs(latent), axis=1)[:, :3]  # [I, 3] the item's most marked axes
    positive = np.take_along_axis(latent, strongest, axis=1) > 0  # [I, 3]
    titles = []
    for axes, pos, cat in zip(strongest.tolist(), positive.tolist(), leaf.tolist()):
        words = [AXIS_WORDS[a % len(AXIS_WORDS)][int(p)] for a, p in zip(axes, pos) if a < d]
        titles.append(f"{' '.join(words)} {names[cat]}")
    return titles


@dataclass(frozen=True)
class Hierarchy:
    """Categories shared by every cohort: top-level sizes, leaves, their centres in taste space."""

    top_weight: np.ndarray   # [C] Zipf-like popularity of top-level categories, sums to 1
    leaf_parent: np.ndarray  # [L]
    leaf_centre: np.ndarray  # [L, d]


def fitted_path(config: WorldConfig) -> Path:
    """A fitted world's arrays: an absolute path, or one relative to configs/scenarios."""
    path = Path(config.fitted)
    return path if path.is_absolute() else SCENARIO_DIR / path


@lru_cache(maxsize=2)
def fitted_arrays(config: WorldConfig) -> dict[str, np.ndarray]:
    """The day-0 users, items and transitions of a world fitted to a log (sim/calibrate.py)."""
    path = fitted_path(config)
    if path.suffix != ".npz":
        from sim import fit   # fitting builds on the world's config, not the other way round
        try:
            _, seqs, n_items = fit.read_sequence_log(path)
        except fit.LogFormatError as exc:
            raise ValueError(f"scenario {config.name}: fitted: {exc}") from None
        f = config.fit
        knobs = fit.Knobs(popularity=f.popularity, smooth=f.smooth, damping=f.damping, backward=f.backward,
                          discount=f.discount, neighbours=f.neighbours, temperature=f.temperature,
                          space=f.space)
        arrays = fit.fit_arrays(seqs, n_items, knobs, n_categories=f.n_categories, dim=config.latent_dim, seed=f.seed)
    else:
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ValueError(f"scenario {config.name}: fitted world {path} cannot be read ({exc}); "
                             f"regenerate it with `python -m bench.calibration`") from None
    for key, n, what in (("user_taste", config.users.n, "users.n"), ("item_latent", config.items.n, "items.n")):
        if len(arrays[key]) != n or arrays[key].shape[1] != config.latent_dim:
            raise ValueError(f"scenario {config.name}: {path} holds {arrays[key].shape} for {key}, but the "
                             f"scenario says {what}={n} and latent_dim={config.latent_dim}; refit it")
    return arrays


def hierarchy(config: WorldConfig) -> Hierarchy:
    ic, d = config.items, config.latent_dim
    if config.fitted:
        z = fitted_arrays(config)
        parent = np.arange(len(z["leaf_centre"])) // ic.subcategories
        sizes = np.bincount(parent[z["item_category"]], minlength=ic.n_categories) + 1.0
        return Hierarchy(sizes / sizes.sum(), parent, z["leaf_centre"].astype(np.float32))
    rng = stream(config.seed, 0, "categories")
    top = _unit(rng.standard_normal((ic.n_categories, d)))                          # [C, d]
    parent = np.repeat(np.arange(ic.n_categories), ic.subcategories)                 # [L]
    leaf = _unit(top[parent] + ic.subcategory_spread * rng.standard_normal((len(parent), d)) / np.sqrt(d))
    weight = 1.0 / np.arange(1, ic.n_categories + 1) ** ic.category_skew
    return Hierarchy(weight / weight.sum(), parent, leaf)


def _item_cohort(config: WorldConfig, h: Hierarchy, day: int, n: int) -> dict[str, np.ndarray]:
    ic, d, c = config.items, config.latent_dim, config.collab_dim
    rng = stream(config.seed, day, "items")
    top = rng.choice(len(h.top_weight), size=n, p=h.top_weight)                     # [n]
    leaf = top * ic.subcategories + rng.integers(0, ic.subcategories, size=n)       # [n]
    latent = _unit(h.leaf_centre[leaf] + ic.spread * rng.standard_normal((n, d)) / np.sqrt(d))  # [n, d]
    content = latent + ic.content_noise * rng.standard_normal((n, d)) / np.sqrt(d)  # [n, d]
    return {"latent": latent.astype(np.float32),
            "collab": (rng.standard_normal((n, c)) / np.sqrt(max(c, 1))).astype(np.float32),
            "quality": (ic.quality_sigma * rng.standard_normal(n)).astype(np.float32),
            "lateness": np.zeros(n, np.float32),
            "category": leaf.astype(np.int32), "content": content.astype(np.float32),
            "created_day": np.full(n, day, np.int32)}


def _activity(config: WorldConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """Heavy-tailed activity of mean 1 in expectation (normalised by the law, not the sample)."""
    uc = config.users
    if uc.activity == "pareto":
        return (1.0 + rng.pareto(uc.activity_alpha, n)) * (uc.activity_alpha - 1) / uc.activity_alpha
    return rng.lognormal(-uc.activity_sigma ** 2 / 2, uc.activity_sigma, n)


def _user_cohort(config: WorldConfig, h: Hierarchy, day: int, n: int) -> dict[str, np.ndarray]:
    uc, ic, d, c = config.users, config.items, config.latent_dim, config.collab_dim
    rng = stream(config.seed, day, "users")
    # Favourite top-level categories, without repeats, more often the big ones (Gumbel top-k).
    # Drawn COHORT_CHUNK users at a time: the same draws in the same order as one [n, C] draw,
    # without its [n, C] float64 and int64 intermediates (a GB at a million users).
    favourite = np.empty((n, min(uc.favourite_categories, len(h.top_weight))), np.int64)   # [n, F]
    for lo in range(0, n, COHORT_CHUNK):
        keys = np.log(h.top_weight)[None, :] + rng.gumbel(size=(min(COHORT_CHUNK, n - lo), len(h.top_weight)))
        favourite[lo:lo + len(keys)] = np.argsort(-keys, axis=1)[:, :uc.favourite_categories]
    leaf = favourite * ic.subcategories + rng.integers(0, ic.subcategories, size=favourite.shape)
    taste = np.empty((n, d), np.float32)
    for lo in range(0, n, COHORT_CHUNK):
        rows = slice(lo, min(lo + COHORT_CHUNK, n))
        noise = rng.standard_normal((rows.stop - lo, d))
        taste[rows] = _unit(h.leaf_centre[leaf[rows]].mean(axis=1) + uc.taste_noise * noise / np.sqrt(d))
    return {"taste": taste,
            "collab": (rng.standard_normal((n, c)) / np.sqrt(max(c, 1))).astype(np.float32),
            "activity": _activity(config, rng, n),
            "age_bucket": rng.integers(0, 6, size=n).astype(np.int32),
            "region": rng.integers(0, 8, size=n).astype(np.int32),
            "created_day": np.full(n, day, np.int32)}


def _fitted_cohort(config: WorldConfig, kind: str) -> dict[str, np.ndarray]:
    """Day 0 of a fitted world: tastes, activity, quality and categories from the log, public
    attributes and content drawn as for any other world."""
    z, d, c = fitted_arrays(config), config.latent_dim, config.collab_dim
    rng = stream(config.seed, 0, f"fitted-{kind}")
    if kind == "items":
        latent, n = z["item_latent"].astype(np.float32), len(z["item_latent"])
        content = latent + config.items.content_noise * rng.standard_normal((n, d)) / np.sqrt(d)
        return {"latent": latent, "collab": (rng.standard_normal((n, c)) / np.sqrt(max(c, 1))).astype(np.float32),
                "quality": z["item_quality"].astype(np.float32), "category": z["item_category"].astype(np.int32),
                # Worlds fitted before lifecycles were fitted have none: an item of no particular time.
                "lateness": z["item_lateness"].astype(np.float32) if "item_lateness" in z else np.zeros(n, np.float32),
                "content": content.astype(np.float32), "created_day": np.zeros(n, np.int32)}
    n = len(z["user_taste"])
    return {"taste": z["user_taste"].astype(np.float32),
            "collab": (rng.standard_normal((n, c)) / np.sqrt(max(c, 1))).astype(np.float32),
            "activity": z["user_activity"].astype(np.float64),
            "age_bucket": rng.integers(0, 6, size=n).astype(np.int32),
            "region": rng.integers(0, 8, size=n).astype(np.int32), "created_day": np.zeros(n, np.int32)}


def _cohorts(config: WorldConfig, h: Hierarchy, through_day: int, kind: str) -> dict[str, np.ndarray]:
    first, per_day = ((config.items.n, config.items.new_per_day) if kind == "items"
                      else (config.users.n, config.users.new_per_day))
    make = _item_cohort if kind == "items" else _user_cohort
    parts = [_fitted_cohort(config, kind) if config.fitted else make(config, h, 0, first)]
    parts += [make(config, h, day, per_day) for day in range(1, through_day + 1) if per_day]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def transitions(config: WorldConfig, h: Hierarchy, items: dict[str, np.ndarray]) -> Transitions:
    """The kernel through the cohorts in `items`: fitted links for a fitted day 0, drawn otherwise."""
    sc, n0, per_day = config.sequence, config.items.n, config.items.new_per_day
    top = h.leaf_parent[items["category"]]
    parts = []
    if config.fitted:
        z = fitted_arrays(config)
        parts.append((z["edge_src"].astype(np.int64), z["edge_dst"].astype(np.int64), z["edge_weight"]))
    starts = [] if config.fitted else [0]
    starts += [n0 + (day - 1) * per_day for day in range(1, (len(top) - n0) // per_day + 1)] if per_day else []
    for start in starts:
        stop = n0 if start == 0 else start + per_day
        rng = stream(config.seed, int(items["created_day"][start]), "transitions")
        parts.append(generated_edges(items["latent"], top, items["quality"], slice(start, stop), sc.neighbours,
                                     sc.locality, sc.cross_category, rng))
    src, dst, w = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(3))
    return Transitions.from_edges(src.astype(np.int64), dst.astype(np.int64), w.astype(np.float32), len(top))


def make_world(config: WorldConfig, through_day: int = 0) -> World:
    """The world with every user and item that has arrived by `through_day`; same inputs, same world."""
    if through_day < 0:
        raise ValueError(f"through_day must be >= 0, got {through_day}")
    h = hierarchy(config)
    items, users = _cohorts(config, h, through_day, "items"), _cohorts(config, h, through_day, "users")
    names = _category_names(config.items.n_categories, config.items.subcategories)
    return World(
        config=config, through_day=through_day, leaf_parent=h.leaf_parent, leaf_centre=h.leaf_centre,
        user_taste=users["taste"], user_collab=users["collab"], user_activity=users["activity"],
        user_age_bucket=users["age_bucket"], user_region=users["region"], user_created_day=users["created_day"],
        item_latent=items["latent"], item_collab=items["collab"], item_quality=items["quality"],
        item_lateness=items["lateness"],
        item_category=items["category"], item_content=items["content"],
        item_title=tuple(_titles(items["latent"], items["category"], names)),
        item_created_day=items["created_day"], category_names=names,
        item_next=transitions(config, h, items),
    )


@lru_cache(maxsize=2)
def cached_world(config: WorldConfig, through_day: int) -> World:
    """make_world, kept for the next call: a day's tasks all need the same world."""
    return make_world(config, through_day)


def item_catalog(world: World, day: int | None = None) -> dict[str, object]:
    """The public columns of the items table; only the items arriving on `day` when given."""
    rows = np.arange(world.n_items) if day is None else np.flatnonzero(world.item_created_day == day)
    return {
        "item_id": rows.astype(np.int64),
        "category": world.item_category[rows].astype(np.int32),
        "title": [world.item_title[i] for i in rows.tolist()],
        "created_day": world.item_created_day[rows].astype(np.int32),
        "content": world.item_content[rows],
    }


def user_catalog(world: World, day: int | None = None) -> dict[str, object]:
    """The public columns of the users table: attributes a real service would know."""
    rows = np.arange(world.n_users) if day is None else np.flatnonzero(world.user_created_day == day)
    return {
        "user_id": rows.astype(np.int64),
        "age_bucket": world.user_age_bucket[rows].astype(np.int32),
        "region": world.user_region[rows].astype(np.int32),
        "created_day": world.user_created_day[rows].astype(np.int32),
    }
