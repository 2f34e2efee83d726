"""Users to arms by a salted hash into 10,000 buckets: sticky, layered, with a holdout and overrides.

A layer hashes every user with its own salt, so two layers are independent of each other
(orthogonal); experiments in one layer own disjoint bucket ranges of it (exclusive). Inside its
range an experiment hashes the user again with its own salt to pick an arm, so the arms are
balanced whatever part of the layer the experiment owns. Nothing depends on the day or on the
other users of a batch, so a user keeps their arm for as long as the configuration does.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

BUCKETS = 10_000
HOLDOUT = "holdout"          # arm of users held out of every experiment: served the control
UNENROLLED = "default"       # arm of users outside every experiment of the layer: served the control
NO_EXPERIMENT = "none"       # experiment recorded for held-out and unenrolled requests
HOLDOUT_SALT = "reclab-holdout"


class SplitError(ValueError):
    """Traffic shares or bucket ranges that cannot be served."""


def buckets(salt: str, user_ids: np.ndarray) -> np.ndarray:
    """Bucket in [0, 10000) of each user: blake2b of 'salt:user_id'. [N] -> [N] int64."""
    out = np.empty(len(user_ids), np.int64)
    for i, u in enumerate(np.asarray(user_ids).tolist()):
        digest = hashlib.blake2b(f"{salt}:{u}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") % BUCKETS
    return out


class Splitter:
    def __init__(self, salt: str, shares: Mapping[str, float]):
        """`shares` maps arm -> percent of users; they must sum to 100."""
        if not shares:
            raise SplitError("a split needs at least one arm")
        bad = {a: s for a, s in shares.items() if not 0 <= s <= 100}
        if bad:
            raise SplitError(f"shares must be between 0 and 100 percent, got {bad}")
        total = sum(shares.values())
        if abs(total - 100.0) > 1e-6:
            raise SplitError(f"traffic shares must sum to 100 percent, got {total:g} ({dict(shares)})")
        self.salt = salt
        self.arms = list(shares)
        edges = np.round(np.cumsum([shares[a] for a in self.arms]) * BUCKETS / 100.0).astype(np.int64)
        self.edges = edges  # arm i owns buckets [edges[i-1], edges[i])

    def bucket(self, user_ids: np.ndarray) -> np.ndarray:
        """Bucket in [0, 10000) of each user: blake2b of 'salt:user_id'."""
        return buckets(self.salt, user_ids)

    def assign(self, user_ids: np.ndarray) -> np.ndarray:
        """Arm name of each user: [N] object array."""
        idx = np.searchsorted(self.edges, self.bucket(user_ids), side="right")
        return np.asarray(self.arms, dtype=object)[idx]


@dataclass(frozen=True)
class Allocation:
    """One experiment's place in the traffic: a bucket range of a layer, split into arms."""

    experiment: str
    layer: str
    shares: Mapping[str, float]                       # arm -> percent of the experiment's users
    start: int = 0                                    # owns layer buckets [start, end)
    end: int = BUCKETS
    salt: str = ""                                    # defaults to the experiment's name
    forced: Mapping[int, str] = field(default_factory=dict)  # user id -> arm, e.g. test accounts

    def check(self) -> None:
        if not 0 <= self.start < self.end <= BUCKETS:
            raise SplitError(f"experiment '{self.experiment}': bucket range [{self.start}, {self.end}) "
                             f"must lie within [0, {BUCKETS}) and not be empty")
        Splitter(self.salt or self.experiment, self.shares)
        unknown = {u: a for u, a in self.forced.items() if a not in self.shares}
        if unknown:
            raise SplitError(f"experiment '{self.experiment}': forced users {unknown} name arms that do "
                             f"not exist; arms are {sorted(self.shares)}")


@dataclass(frozen=True)
class Assignment:
    """Where each user of a batch lands in one layer: [N] object arrays."""

    layer: str
    experiment: np.ndarray
    arm: np.ndarray
    forced: np.ndarray        # [N] bool: arm set by override, not by chance; left out of statistics


def check_layers(allocations: Sequence[Allocation]) -> None:
    """Refuse experiments that share a name, or overlapping bucket ranges within one layer."""
    names = [a.experiment for a in allocations]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SplitError(f"experiments {dup} are allocated more than once")
    for a in allocations:
        a.check()
    layer_of: dict[tuple[str, int], str] = {}
    for a in allocations:
        for user in a.forced:
            other = layer_of.setdefault((a.layer, user), a.experiment)
            if other != a.experiment:
                raise SplitError(f"layer '{a.layer}': user {user} is forced into both '{other}' and "
                                 f"'{a.experiment}'; a user is in at most one experiment per layer")
    for i, a in enumerate(allocations):
        for b in allocations[i + 1:]:
            if a.layer == b.layer and a.start < b.end and b.start < a.end:
                raise SplitError(
                    f"layer '{a.layer}': experiment '{a.experiment}' (buckets {a.start}-{a.end}) overlaps "
                    f"'{b.experiment}' (buckets {b.start}-{b.end}); experiments of one layer must own "
                    f"disjoint ranges, or go to different layers")


class Assigner:
    """All experiments of all layers, a global holdout, and forced users."""

    def __init__(self, allocations: Sequence[Allocation], holdout: float = 0.0):
        """`holdout`: percent of all users kept out of every experiment (the same users in every layer)."""
        if not 0 <= holdout < 100:
            raise SplitError(f"holdout must be at least 0 and below 100 percent, got {holdout:g}")
        check_layers(allocations)
        self.allocations = list(allocations)
        self.holdout = holdout
        self.layers = sorted({a.layer for a in allocations})

    def held_out(self, user_ids: np.ndarray) -> np.ndarray:
        """[N] bool: users in the global holdout."""
        return buckets(HOLDOUT_SALT, user_ids) < round(self.holdout * BUCKETS / 100)

    def assign(self, user_ids: np.ndarray, layer: str) -> Assignment:
        """Experiment and arm of each user in `layer`; forced users win over the holdout."""
        if layer not in self.layers:
            raise SplitError(f"unknown layer '{layer}'; layers are {self.layers}")
        user_ids = np.asarray(user_ids, np.int64)
        n = len(user_ids)
        experiment = np.full(n, NO_EXPERIMENT, dtype=object)
        arm = np.full(n, UNENROLLED, dtype=object)
        forced = np.zeros(n, bool)
        b = buckets(f"layer:{layer}", user_ids)
        for a in (a for a in self.allocations if a.layer == layer):
            inside = (b >= a.start) & (b < a.end)
            if inside.any():
                experiment[inside] = a.experiment
                arm[inside] = Splitter(a.salt or a.experiment, a.shares).assign(user_ids[inside])
        if self.holdout > 0:
            out = self.held_out(user_ids)
            experiment[out], arm[out] = NO_EXPERIMENT, HOLDOUT
        for a in (a for a in self.allocations if a.layer == layer):
            for user, forced_arm in a.forced.items():
                hit = user_ids == user
                experiment[hit], arm[hit], forced[hit] = a.experiment, forced_arm, True
        return Assignment(layer=layer, experiment=experiment, arm=arm, forced=forced)
