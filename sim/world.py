"""Users and items with hidden latent tastes, and the public catalog they publish."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.config import WorldConfig

CATEGORY_NOUNS = (
    "serum", "lipstick", "shampoo", "moisturiser", "mascara", "perfume", "cleanser", "sunscreen",
    "nail polish", "conditioner", "eyeliner", "face mask", "toner", "foundation", "body lotion",
    "hair oil", "blush", "lip balm", "eye cream", "exfoliator", "concealer", "bath salt",
    "hand cream", "dry shampoo",
)
# One word pair per latent axis: the sign of an item's coordinate picks the word, so titles
# carry the item's position in taste space and a text encoder can recover it.
AXIS_WORDS = (
    ("matte", "glossy"), ("floral", "woody"), ("gentle", "intense"), ("classic", "trendy"),
    ("vegan", "clinical"), ("budget", "luxury"), ("light", "rich"), ("fresh", "warm"),
    ("natural", "bold"), ("daily", "festive"), ("unscented", "fragrant"), ("mini", "family-size"),
    ("hydrating", "mattifying"), ("soft", "vivid"), ("organic", "advanced"), ("cool", "sunny"),
)


@dataclass(frozen=True)
class World:
    """The world's truth (tastes, quality) and its public catalog (categories, titles, content)."""

    config: WorldConfig
    user_taste: np.ndarray       # [U, d] hidden, unit norm
    user_activity: np.ndarray    # [U] hidden, mean 1
    user_age_bucket: np.ndarray  # [U] public
    user_region: np.ndarray      # [U] public
    item_latent: np.ndarray      # [I, d] hidden, unit norm
    item_quality: np.ndarray     # [I] hidden
    item_category: np.ndarray    # [I] public
    item_content: np.ndarray     # [I, d] public: a noisy view of item_latent
    item_title: tuple[str, ...]  # [I] public
    category_names: tuple[str, ...]

    @property
    def n_users(self) -> int:
        return len(self.user_taste)

    @property
    def n_items(self) -> int:
        return len(self.item_latent)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _category_names(n: int) -> tuple[str, ...]:
    names = [CATEGORY_NOUNS[c % len(CATEGORY_NOUNS)] for c in range(n)]
    return tuple(f"{name} {c // len(CATEGORY_NOUNS) + 1}" if c >= len(CATEGORY_NOUNS) else name
                 for c, name in enumerate(names))


def _titles(latent: np.ndarray, category: np.ndarray, names: tuple[str, ...]) -> tuple[str, ...]:
    d = latent.shape[1]
    strongest = np.argsort(-np.abs(latent), axis=1)[:, :3]  # [I, 3] the item's most marked axes
    titles = []
    for i, axes in enumerate(strongest):
        words = [AXIS_WORDS[a % len(AXIS_WORDS)][int(latent[i, a] > 0)] for a in axes if a < d]
        titles.append(f"{' '.join(words)} {names[category[i]]}")
    return tuple(titles)


def make_world(config: WorldConfig) -> World:
    """Draw a world from its config; the same config and seed always give the same world."""
    rng = np.random.default_rng([config.seed, 0])
    d, ic, uc = config.latent_dim, config.items, config.users
    centres = _unit(rng.standard_normal((ic.n_categories, d)))                 # [C, d]
    # Zipf-like category sizes: a few big categories, a long tail of small ones.
    cat_weight = 1.0 / np.arange(1, ic.n_categories + 1) ** 0.7
    category = rng.choice(ic.n_categories, size=ic.n, p=cat_weight / cat_weight.sum())  # [I]
    item_latent = _unit(centres[category] + ic.spread * rng.standard_normal((ic.n, d)) / np.sqrt(d))
    quality = ic.quality_sigma * rng.standard_normal(ic.n)                     # [I]
    content = item_latent + ic.content_noise * rng.standard_normal((ic.n, d)) / np.sqrt(d)

    favourites = rng.choice(ic.n_categories, size=(uc.n, uc.favourite_categories),
                            p=cat_weight / cat_weight.sum())                    # [U, F]
    taste = centres[favourites].mean(axis=1)                                    # [U, d]
    taste = _unit(taste + uc.taste_noise * rng.standard_normal((uc.n, d)) / np.sqrt(d))
    activity = rng.lognormal(0.0, uc.activity_sigma, size=uc.n)
    activity /= activity.mean()

    names = _category_names(ic.n_categories)
    return World(
        config=config,
        user_taste=taste.astype(np.float32),
        user_activity=activity,
        user_age_bucket=rng.integers(0, 6, size=uc.n),
        user_region=rng.integers(0, 8, size=uc.n),
        item_latent=item_latent.astype(np.float32),
        item_quality=quality.astype(np.float32),
        item_category=category,
        item_content=content.astype(np.float32),
        item_title=_titles(item_latent, category, names),
        category_names=names,
    )


def item_catalog(world: World) -> dict[str, object]:
    """The public columns of the items table, as the world publishes them."""
    return {
        "item_id": np.arange(world.n_items, dtype=np.int64),
        "category": world.item_category.astype(np.int32),
        "title": list(world.item_title),
        "created_day": np.zeros(world.n_items, dtype=np.int32),
        "content": world.item_content,
    }


def user_catalog(world: World) -> dict[str, object]:
    """The public columns of the users table: attributes a real service would know."""
    return {
        "user_id": np.arange(world.n_users, dtype=np.int64),
        "age_bucket": world.user_age_bucket.astype(np.int32),
        "region": world.user_region.astype(np.int32),
        "created_day": np.zeros(world.n_users, dtype=np.int32),
    }
