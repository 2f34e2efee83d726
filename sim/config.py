"""WorldConfig: the scenario of a simulated world, loaded strictly from configs/scenarios/*.yaml."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.typedconf import load_preset, require
from sim.effects import EffectConfig

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "configs" / "scenarios"


@dataclass(frozen=True)
class UserConfig:
    n: int = 5000
    taste_noise: float = 0.5          # spread of a user's taste around their favourite categories
    favourite_categories: int = 2
    activity_sigma: float = 1.0       # lognormal spread of activity: a heavy tail of heavy users

    def validate(self, where: str) -> None:
        require(self.n >= 1, f"{where}.n", f"must be at least 1, got {self.n}")
        require(self.favourite_categories >= 1, f"{where}.favourite_categories", "must be at least 1")
        require(self.taste_noise >= 0, f"{where}.taste_noise", "must be >= 0")
        require(self.activity_sigma >= 0, f"{where}.activity_sigma", "must be >= 0")


@dataclass(frozen=True)
class ItemConfig:
    n: int = 2000
    n_categories: int = 20
    spread: float = 0.6               # spread of items around their category centre
    quality_sigma: float = 0.4
    content_noise: float = 0.3        # how far the public content vector is from the hidden truth

    def validate(self, where: str) -> None:
        require(self.n >= 1, f"{where}.n", f"must be at least 1, got {self.n}")
        require(1 <= self.n_categories <= self.n, f"{where}.n_categories",
                f"must be between 1 and items.n ({self.n}), got {self.n_categories}")
        for name in ("spread", "quality_sigma", "content_noise"):
            require(getattr(self, name) >= 0, f"{where}.{name}", "must be >= 0")


@dataclass(frozen=True)
class BehaviorConfig:
    base_logit: float = -3.0          # logit of a click on an item of average match
    relevance_scale: float = 3.0      # how much taste match moves the logit
    position_decay: float = 0.8       # examination at rank r (0-based) is 1 / (1 + r) ** decay

    def validate(self, where: str) -> None:
        require(self.relevance_scale >= 0, f"{where}.relevance_scale", "must be >= 0")
        require(self.position_decay >= 0, f"{where}.position_decay", "must be >= 0")


@dataclass(frozen=True)
class TrafficConfig:
    requests_per_user: float = 1.0    # mean requests per user per day

    def validate(self, where: str) -> None:
        require(self.requests_per_user > 0, f"{where}.requests_per_user", "must be > 0")


@dataclass(frozen=True)
class WorldConfig:
    name: str = "custom"
    seed: int = 0
    latent_dim: int = 16
    users: UserConfig = field(default_factory=UserConfig)
    items: ItemConfig = field(default_factory=ItemConfig)
    behavior: BehaviorConfig = field(default_factory=BehaviorConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    effect: EffectConfig = field(default_factory=EffectConfig)  # a known effect, for validating A/B

    def validate(self, where: str) -> None:
        require(self.latent_dim >= 2, f"{where}.latent_dim", f"must be at least 2, got {self.latent_dim}")
        require(self.seed >= 0, f"{where}.seed", "must be >= 0")


def load_scenario(name_or_path: str) -> WorldConfig:
    """A preset name from configs/scenarios (e.g. 'small') or a path to a YAML file."""
    return load_preset(WorldConfig, name_or_path, SCENARIO_DIR, "scenario")
