"""The choice model: relevance, position bias, clicks; and the oracle that knows it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.world import World


def examination(world: World, slate_size: int) -> np.ndarray:
    """Probability that a user looks at each rank: [K], falling with rank."""
    ranks = np.arange(slate_size)
    return 1.0 / (1.0 + ranks) ** world.config.behavior.position_decay


def relevance(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Click probability of an examined item: users [B], items [B, K] -> [B, K]."""
    b = world.config.behavior
    match = np.einsum("bd,bkd->bk", world.user_taste[users], world.item_latent[items])  # [B, K]
    logit = b.base_logit + b.relevance_scale * match + world.item_quality[items]
    return 1.0 / (1.0 + np.exp(-logit))


def click_probability(world: World, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """The world's truth: P(click) per slot, users [B], slates [B, K] -> [B, K]."""
    return relevance(world, users, slates) * examination(world, slates.shape[1])[None, :]


def respond(world: World, users: np.ndarray, slates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw clicks for a batch of slates in one pass: [B, K] bool."""
    return rng.random(slates.shape) < click_probability(world, users, slates)


@dataclass(frozen=True)
class Reference:
    """Expected CTR per request of the oracle's best slate and of a uniformly random slate."""

    oracle: np.ndarray  # [B]
    random: np.ndarray  # [B]


def reference_ctr(world: World, users: np.ndarray, slate_size: int, chunk: int = 512) -> Reference:
    """Oracle and random expected CTR for each request's user.

    With examination falling in rank, the best slate puts the K most relevant items in order of
    relevance (rearrangement inequality), so the oracle is exact, not a heuristic.
    """
    exam = examination(world, slate_size)                                          # [K]
    oracle = np.empty(len(users))
    random = np.empty(len(users))
    b = world.config.behavior
    for start in range(0, len(users), chunk):
        u = users[start:start + chunk]
        logit = b.base_logit + b.relevance_scale * (world.user_taste[u] @ world.item_latent.T)
        rel = 1.0 / (1.0 + np.exp(-(logit + world.item_quality[None, :])))        # [b, I]
        k = min(slate_size, rel.shape[1])
        top = -np.sort(-np.partition(rel, rel.shape[1] - k, axis=1)[:, -k:], axis=1)  # [b, k]
        oracle[start:start + chunk] = (top * exam[:k]).sum(axis=1) / slate_size
        random[start:start + chunk] = rel.mean(axis=1) * exam.mean()
    return Reference(oracle=oracle, random=random)
