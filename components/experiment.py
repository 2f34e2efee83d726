"""An experiment: its arms, the models they need, where it sits in the traffic, how it is analysed."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

from common.typedconf import ConfigError, load_preset, require
from components.ab import BUCKETS, HOLDOUT, UNENROLLED, Allocation, AnalysisConfig, SplitError, check_layers
from components.ranking import CoarseConfig, DeepFMConfig, DINConfig, MLPConfig
from components.recall import (ColdStartConfig, ContentI2IConfig, ExploreConfig, GenerativeConfig, ItemCFConfig,
                               PopularCategoryConfig, PopularConfig, SASRecConfig, SwingConfig, TwoTowerConfig)
from components.features.online import OnlineStoreConfig
from components.recall_eval import RecallEvalConfig
from components.serving.config import ArmConfig

EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "configs" / "experiments"
ARM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ModelsConfig:
    popular: PopularConfig = field(default_factory=PopularConfig)
    popular_category: PopularCategoryConfig = field(default_factory=PopularCategoryConfig)
    itemcf: ItemCFConfig = field(default_factory=ItemCFConfig)
    content_i2i: ContentI2IConfig = field(default_factory=ContentI2IConfig)
    swing: SwingConfig = field(default_factory=SwingConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    coldstart: ColdStartConfig = field(default_factory=ColdStartConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    mlp: MLPConfig = field(default_factory=MLPConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    deepfm: DeepFMConfig = field(default_factory=DeepFMConfig)
    din: DINConfig = field(default_factory=DINConfig)
    sample_window_days: int = 3       # days of samples the ranker trains on

    def validate(self, where: str) -> None:
        # Each model's own settings are checked by its config's validate, as it is read.
        require(self.sample_window_days >= 1, f"{where}.sample_window_days", "must be at least 1")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    arms: dict[str, ArmConfig]
    control: str
    salt: str = ""                    # defaults to the name: a new experiment reshuffles users
    slate_size: int = 10
    serve_batch_size: int = 16        # requests served together; each sees its batch's latency
    removed_settings: ClassVar[dict[str, str]] = {"seed": "it seeded nothing: a model's randomness is "
                                                  "models.<model>.seed, the world's the scenario's seed"}
    logging_policy: ArmConfig = field(
        default_factory=lambda: ArmConfig(channels={"popular": 20, "explore": 20}, share=100.0))
    models: ModelsConfig = field(default_factory=ModelsConfig)
    layer: str = "default"            # experiments of one layer are exclusive, of two layers orthogonal
    buckets: tuple[int, int] = (0, BUCKETS)  # the layer's buckets [start, end) this experiment owns
    holdout: float = 0.0              # percent of all users kept out of every experiment (served control)
    forced: dict[str, list[int]] = field(default_factory=dict)  # arm -> user ids always served it
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    # Share of served requests whose online feature vectors are logged (features_online) and
    # checked against the samples: offline/online consistency.
    feature_log_rate: float = 0.05

    recall_eval: RecallEvalConfig = field(default_factory=RecallEvalConfig)
    # Where serving reads the day's features and the shards share item events: in-process
    # (embedded, no server) or a Redis server with a local cache tier (components/features/online.py).
    online_store: OnlineStoreConfig = field(default_factory=OnlineStoreConfig)

    def validate(self, where: str) -> None:
        require(bool(self.arms), f"{where}.arms", "an experiment needs at least one arm")
        for name in self.arms:   # arm names become MLflow metric names and lake values
            require(bool(ARM_NAME.fullmatch(name)), f"{where}.arms.{name}",
                    "an arm name may use letters, digits, '_' and '-' only (at most 64)")
        require(self.control in self.arms, f"{where}.control",
                f"'{self.control}' is not one of the arms {sorted(self.arms)}")
        total = sum(arm.share for arm in self.arms.values())
        shares = ", ".join(f"{n}={a.share:g}" for n, a in self.arms.items())
        require(abs(total - 100.0) < 1e-6, f"{where}.arms",
                f"traffic shares must sum to 100, got {total:g} ({shares})")
        require(1 <= self.slate_size <= 100, f"{where}.slate_size", "must be between 1 and 100")
        require(self.serve_batch_size >= 1, f"{where}.serve_batch_size", "must be at least 1")
        require(0.0 <= self.feature_log_rate <= 1.0, f"{where}.feature_log_rate",
                f"must be between 0 and 1, got {self.feature_log_rate}")
        for name, arm in {**self.arms, "logging_policy": self.logging_policy}.items():
            quota = sum(arm.channels.values())
            require(quota >= self.slate_size, f"{where}.arms.{name}.channels",
                    f"quotas sum to {quota}, fewer than slate_size {self.slate_size}")
        for name in set(self.arms) & {HOLDOUT, UNENROLLED}:
            require(False, f"{where}.arms.{name}", f"'{name}' is reserved for users outside the experiment")
        require(bool(self.layer.strip()), f"{where}.layer", "must be a non-empty name")
        require(len(self.buckets) == 2 and 0 <= self.buckets[0] < self.buckets[1] <= BUCKETS,
                f"{where}.buckets", f"must be [start, end] with 0 <= start < end <= {BUCKETS}, got "
                f"{list(self.buckets)}")
        require(0 <= self.holdout < 100, f"{where}.holdout",
                f"must be a percent at least 0 and below 100, got {self.holdout:g}")
        seen: dict[int, str] = {}
        for arm, users in self.forced.items():
            require(arm in self.arms, f"{where}.forced.{arm}",
                    f"unknown arm '{arm}'; arms are {sorted(self.arms)}")
            for user in users:
                other = seen.setdefault(user, arm)
                require(other == arm, f"{where}.forced", f"user {user} is forced into both '{other}' and '{arm}'")

    def allocation(self) -> Allocation:
        """This experiment's place in its layer, for the splitter."""
        return Allocation(experiment=self.name, layer=self.layer,
                          shares={n: a.share for n, a in self.arms.items()},
                          start=self.buckets[0], end=self.buckets[1], salt=self.effective_salt,
                          forced={u: arm for arm, users in self.forced.items() for u in users})

    def forced_users(self) -> list[int]:
        return sorted(u for users in self.forced.values() for u in users)

    @property
    def effective_salt(self) -> str:
        return self.salt or self.name

    def channels_needed(self) -> list[str]:
        names = {c for arm in (*self.arms.values(), self.logging_policy) for c in arm.channels}
        return sorted(names)

    def rankers_needed(self) -> list[str]:
        arms = (*self.arms.values(), self.logging_policy)
        return sorted({r for a in arms for r in (a.fine_ranker, a.coarse)} - {"none"})


def check_presets(experiments: list[ExperimentConfig]) -> None:
    """Refuse experiments that cannot run side by side: overlapping bucket ranges in one layer."""
    try:
        check_layers([e.allocation() for e in experiments])
    except SplitError as exc:
        raise ConfigError(f"experiments: {exc}") from None


def load_experiment(name_or_path: str) -> ExperimentConfig:
    """A preset name from configs/experiments (e.g. 'default') or a path to a YAML file."""
    return load_preset(ExperimentConfig, name_or_path, EXPERIMENT_DIR, "experiment")
