"""WorldConfig: the scenario of a simulated world, loaded strictly from configs/scenarios/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.typedconf import load_preset, require
from sim.effects import EffectConfig

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "configs" / "scenarios"


def _rate(obj: object, name: str, where: str) -> None:
    value = getattr(obj, name)
    require(0.0 <= value <= 1.0, f"{where}.{name}", f"must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class UserConfig:
    n: int = 5000                     # users on day 0
    new_per_day: int = 0              # users arriving on each later day
    favourite_categories: int = 2     # top-level categories a user's taste is drawn around
    taste_noise: float = 0.5          # spread of a user's taste around their favourite subcategories
    activity: Literal["lognormal", "pareto"] = "lognormal"
    activity_sigma: float = 1.0       # lognormal spread of activity: a heavy tail of heavy users
    activity_alpha: float = 2.0       # pareto tail index (smaller: heavier tail); needs > 1 for a mean
    churn_rate: float = 0.0           # daily chance that an active user leaves
    churn_click_relief: float = 0.5   # a user who clicked that day churns this much less often
    return_rate: float = 0.0          # daily chance that a churned user comes back

    def validate(self, where: str) -> None:
        require(self.n >= 1, f"{where}.n", f"must be at least 1, got {self.n}")
        require(self.new_per_day >= 0, f"{where}.new_per_day", f"must be >= 0, got {self.new_per_day}")
        require(self.favourite_categories >= 1, f"{where}.favourite_categories", "must be at least 1")
        require(self.taste_noise >= 0, f"{where}.taste_noise", "must be >= 0")
        require(self.activity_sigma >= 0, f"{where}.activity_sigma", "must be >= 0")
        require(self.activity_alpha > 1, f"{where}.activity_alpha",
                f"must be > 1 (a pareto tail with alpha <= 1 has no mean), got {self.activity_alpha}")
        for name in ("churn_rate", "churn_click_relief", "return_rate"):
            _rate(self, name, where)


@dataclass(frozen=True)
class ItemConfig:
    n: int = 2000                     # items on day 0
    new_per_day: int = 0              # items arriving on each later day (cold start)
    n_categories: int = 20            # top-level categories
    subcategories: int = 1            # leaves under each top-level category
    category_skew: float = 0.7        # Zipf exponent of category sizes: a few big, a long tail
    spread: float = 0.6               # spread of items around their subcategory centre
    subcategory_spread: float = 0.5   # spread of subcategory centres around their category centre
    quality_sigma: float = 0.4        # spread of the hidden quality term (item appeal for everyone)
    content_noise: float = 0.3        # how far the public content vector is from the hidden truth

    def validate(self, where: str) -> None:
        require(self.n >= 1, f"{where}.n", f"must be at least 1, got {self.n}")
        require(self.new_per_day >= 0, f"{where}.new_per_day", f"must be >= 0, got {self.new_per_day}")
        require(self.n_categories >= 1, f"{where}.n_categories", f"must be at least 1, got {self.n_categories}")
        require(self.subcategories >= 1, f"{where}.subcategories", f"must be at least 1, got {self.subcategories}")
        require(self.n_categories * self.subcategories <= self.n, f"{where}.n_categories",
                f"n_categories * subcategories ({self.n_categories * self.subcategories}) must not "
                f"exceed items.n ({self.n}): every leaf category needs a chance of an item")
        for name in ("category_skew", "spread", "subcategory_spread", "quality_sigma", "content_noise"):
            require(getattr(self, name) >= 0, f"{where}.{name}", "must be >= 0")

    @property
    def n_leaves(self) -> int:
        return self.n_categories * self.subcategories


@dataclass(frozen=True)
class BehaviorConfig:
    """A multinomial choice per request: one of the slate's items, or the no-click option."""

    base_logit: float = -3.0          # utility of an item of average match, against no_click_utility
    no_click_utility: float = 0.0     # utility of leaving without a click
    relevance_scale: float = 3.0      # how much taste match moves the utility
    content_weight: float = 0.7       # share of match from content taste; the rest is collaborative
    position_decay: float = 0.8       # examination at rank r (0-based) is 1 / (1 + r) ** decay
    popularity_scale: float = 0.0     # utility per log1p(recent clicks of the item): social proof
    popularity_decay: float = 0.8     # share of an item's click count kept from one day to the next
    fatigue: float = 0.0              # utility lost per recent exposure of the same item to the user
    fatigue_decay: float = 0.5        # share of an exposure count kept from one day to the next
    novelty: float = 0.0              # utility bonus of an item on its arrival day
    novelty_days: float = 3.0         # e-folding time of the novelty bonus, in days
    drift: float = 0.0                # daily random-walk step of each user's taste (0: fixed tastes)
    # What the no-click option is worth. "fixed": exp(no_click_utility) for everyone. "catalogue":
    # exp(no_click_utility) times the user's whole organic mass (sum of exp(utility) over the
    # catalogue, at the start of the day): a slate competes with what the user would find on their
    # own, so showing the item they were about to look for is clicked, a random one almost never.
    outside: Literal["fixed", "catalogue"] = "fixed"
    # Share of visits in which the user, besides answering the slate, also takes one item on their
    # own (search, browsing): drawn from the same utilities over the whole catalogue, logged in the
    # lake's `organic` table, remembered by the world and seen by the recommenders, as real logs
    # mix recommended and organic events. 0: users take only what slates show them.
    organic: float = 0.0
    # Item lifecycles: the world has a clock running to 1 (from lifecycle_start on day 0 over
    # `lifecycle_days` days of a campaign, or from -1 over a fitted user's sequence drawn whole), and
    # an item of lateness l (a fitted world's items: where they sit in the log's sequences,
    # sim/structure.lateness) gains lifecycle * l * clock: late items rise as the clock runs, early
    # ones fade. 0: no time. A campaign on a fitted world starts where its log ends (start 1).
    lifecycle: float = 0.0
    lifecycle_days: int = 30
    lifecycle_start: float = -1.0

    def validate(self, where: str) -> None:
        _rate(self, "organic", where)
        require(self.lifecycle >= 0, f"{where}.lifecycle", f"must be >= 0, got {self.lifecycle}")
        require(self.lifecycle_days >= 2, f"{where}.lifecycle_days", f"must be >= 2, got {self.lifecycle_days}")
        require(-1 <= self.lifecycle_start <= 1, f"{where}.lifecycle_start",
                f"must be in [-1, 1], got {self.lifecycle_start}")
        require(self.relevance_scale >= 0, f"{where}.relevance_scale", "must be >= 0")
        require(self.position_decay >= 0, f"{where}.position_decay", "must be >= 0")
        _rate(self, "content_weight", where)
        _rate(self, "popularity_decay", where)
        _rate(self, "fatigue_decay", where)
        for name in ("popularity_scale", "fatigue", "novelty", "drift"):
            require(getattr(self, name) >= 0, f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        require(self.novelty_days > 0, f"{where}.novelty_days", f"must be > 0, got {self.novelty_days}")


@dataclass(frozen=True)
class SequenceConfig:
    """What a user takes next depends on what they took last: complements, refills, product lines.

    Each item leads on to a few others (a row-stochastic transition kernel, hidden). A user's
    affinity for item j is A(j) = sum_l lag_decay**l * K(h_l, j) over their `memory` most recent
    clicks h_0 (newest), h_1, ...; the utility gains weight * log1p(A(j) / floor), so an item no
    recent click leads to gains nothing and a strong transition gains about weight * log(1 / floor).
    """

    weight: float = 0.0          # 0 turns the sequential structure off
    memory: int = 3              # recent clicks the next choice depends on
    lag_decay: float = 0.5       # weight of the click l steps back: lag_decay ** l
    floor: float = 0.01          # the affinity at which the bonus is weight * log 2
    neighbours: int = 12         # generated worlds: items each arriving item links to
    locality: float = 6.0        # generated worlds: preference of links for items close in hidden taste
    cross_category: float = 0.3  # generated worlds: share of links to items of another top-level category
    repeat: float = 0.0          # utility lost on an item the user has already clicked
    prior_events: int = 0        # organic choices a user has made before arriving (memory, not logged)

    def validate(self, where: str) -> None:
        for name in ("weight", "locality", "repeat"):
            require(getattr(self, name) >= 0, f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        require(1 <= self.memory <= 16, f"{where}.memory", f"must be between 1 and 16, got {self.memory}")
        require(self.neighbours >= 1, f"{where}.neighbours", f"must be at least 1, got {self.neighbours}")
        require(self.floor > 0, f"{where}.floor", f"must be > 0, got {self.floor}")
        require(0 <= self.prior_events <= 64, f"{where}.prior_events", f"must be between 0 and 64, got {self.prior_events}")
        _rate(self, "lag_decay", where)
        _rate(self, "cross_category", where)


@dataclass(frozen=True)
class FitConfig:
    """How a world fitted to a log (`fitted:` a log file) is built from it (sim/fit.py)."""

    popularity: float = 0.5       # item quality = popularity * centred log count
    smooth: float = 0.2           # share of each item's transitions on the low-rank kernel
    damping: float = 0.5          # a counted transition a -> b is divided by count(b) ** damping
    backward: float = 0.5         # weight of "b before a" when counting a -> b
    discount: float = 0.0         # subtracted from every counted pair
    neighbours: int = 50          # targets of each item on the low-rank kernel
    temperature: float = 0.1      # cosine gap that divides a low-rank transition's weight by e
    space: str = "cooc"           # the low-rank kernel: "cooc" factors, the items' "latent" positions, or "next":
                                  # the items resembling those that follow (the log's pairs composed with "latent")
    n_categories: int = 20        # leaf categories: k-means clusters of the items' positions
    seed: int = 0                 # the fit's own randomness (SVD, k-means)

    def validate(self, where: str) -> None:
        for name in ("popularity", "damping", "backward", "discount"):
            require(getattr(self, name) >= 0, f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        _rate(self, "smooth", where)
        require(self.neighbours >= 1, f"{where}.neighbours", f"must be at least 1, got {self.neighbours}")
        require(self.temperature > 0, f"{where}.temperature", f"must be > 0, got {self.temperature}")
        require(self.space in ("cooc", "latent", "next"), f"{where}.space",
                f"must be cooc, latent or next, got {self.space!r}")
        require(self.n_categories >= 1, f"{where}.n_categories", f"must be at least 1, got {self.n_categories}")
        require(self.seed >= 0, f"{where}.seed", "must be >= 0")


@dataclass(frozen=True)
class TrafficConfig:
    sessions_per_user: float = 1.0   # mean sessions per active user per day, times the user's activity
    requests_per_session: float = 1.0  # mean requests in a session (at least one)
    diurnal_amplitude: float = 0.6   # 0: flat over the day; near 1: quiet nights, busy evenings
    peak_hour: int = 20              # hour of the day with the most sessions
    session_gap_s: float = 60.0      # mean seconds between requests of a session

    def validate(self, where: str) -> None:
        require(self.sessions_per_user > 0, f"{where}.sessions_per_user", "must be > 0")
        require(self.requests_per_session >= 1, f"{where}.requests_per_session",
                f"must be at least 1 (a session is one request or more), got {self.requests_per_session}")
        require(0 <= self.diurnal_amplitude < 1, f"{where}.diurnal_amplitude",
                f"must be in [0, 1), got {self.diurnal_amplitude}")
        require(0 <= self.peak_hour <= 23, f"{where}.peak_hour", f"must be an hour 0..23, got {self.peak_hour}")
        require(self.session_gap_s > 0, f"{where}.session_gap_s", "must be > 0")


@dataclass(frozen=True)
class OracleConfig:
    """The oracle scores every item for a request: over a large catalogue, only a sample."""

    sample_requests: int = 0          # requests per day given the oracle; 0: every request
    random_draws: int = 16            # random slates per request for the random reference

    def validate(self, where: str) -> None:
        require(self.sample_requests >= 0, f"{where}.sample_requests", "must be >= 0 (0: every request)")
        require(self.random_draws >= 1, f"{where}.random_draws", "must be at least 1")


@dataclass(frozen=True)
class WorldConfig:
    name: str = "custom"
    seed: int = 0
    latent_dim: int = 16              # content taste space, seen through items' content vectors
    collab_dim: int = 8               # collaborative taste space, never published
    users: UserConfig = field(default_factory=UserConfig)
    items: ItemConfig = field(default_factory=ItemConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    # A world fitted to a real log (`python -m bench.calibration`): the log itself (`user item ...`
    # lines, fitted when the world is built, as `fit` says) or an .npz of fitted arrays; a relative
    # path is relative to configs/scenarios. "" draws the world from the priors above.
    fitted: str = ""
    fit: FitConfig = field(default_factory=FitConfig)
    effect: EffectConfig = field(default_factory=EffectConfig)  # a known effect, for validating A/B

    def validate(self, where: str) -> None:
        require(self.latent_dim >= 2, f"{where}.latent_dim", f"must be at least 2, got {self.latent_dim}")
        require(self.collab_dim >= 0, f"{where}.collab_dim", f"must be >= 0, got {self.collab_dim}")
        require(self.seed >= 0, f"{where}.seed", "must be >= 0")
        require(self.users.favourite_categories <= self.items.n_categories, f"{where}.users.favourite_categories",
                f"must not exceed items.n_categories ({self.items.n_categories}), "
                f"got {self.users.favourite_categories}")
        require(self.collab_dim > 0 or self.behavior.content_weight == 1.0, f"{where}.behavior.content_weight",
                f"must be 1 when collab_dim is 0 (there is no collaborative taste to weigh), "
                f"got {self.behavior.content_weight}")
        require(self.users.return_rate > 0 or self.users.churn_rate < 1 or self.users.new_per_day > 0,
                f"{where}.users.churn_rate", "1 with no return_rate and no new users empties the world after a day")


def load_scenario(name_or_path: str) -> WorldConfig:
    """A preset name from configs/scenarios (e.g. 'small') or a path to a YAML file."""
    return load_preset(WorldConfig, name_or_path, SCENARIO_DIR, "scenario")
