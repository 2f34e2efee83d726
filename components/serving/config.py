"""An arm's config: which channels, quotas and rankers its pipeline serves with."""
from __future__ import annotations

from dataclasses import dataclass, field

from common.typedconf import require
from components.ranking import RANKERS
from components.recall import CHANNELS


@dataclass(frozen=True)
class IncrementalConfig:
    """Intra-day updates of an arm's own models from the day's stream, beside the daily retrain
    (components/serving/incremental.py). `every` 0: the models change once a day."""

    every: int = 0            # micro-batches between updates (4: hourly at 15-minute micro-batches)
    steps: int = 1            # SGD passes of the fine ranker's id rows over the impressions since the last update
    lr: float = 0.05          # their learning rate (plain SGD: no optimiser state carried between updates)
    batch_size: int = 512     # impressions per SGD step
    # Weight of today's stream statistics beside the daily ones: clicks in popularity, co-clicks
    # (normalised by their own counts) in item-CF's similarity.
    stream_weight: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def validate(self, where: str) -> None:
        for name in ("every", "steps"):
            require(getattr(self, name) >= 0, f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        require(self.batch_size >= 1, f"{where}.batch_size", f"must be at least 1, got {self.batch_size}")
        require(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")
        require(self.stream_weight >= 0, f"{where}.stream_weight", f"must be >= 0, got {self.stream_weight}")


@dataclass(frozen=True)
class ArmConfig:
    channels: dict[str, int]          # channel name -> quota of candidates
    ranker: str = "none"              # the fine ranker's old name: used when `fine` is "none"
    share: float = 0.0                # percent of users
    coarse: str = "none"              # a name in RANKERS that cuts the merged candidates first
    coarse_keep: int = 100            # candidates the coarse ranker passes to the fine one
    fine: str = "none"                # a name in RANKERS for the slate, or "none" to interleave
    parallel_recall: bool = False     # run the channels on a thread pool: recall takes the slowest one's time
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)  # intra-day model updates

    @property
    def fine_ranker(self) -> str:
        return self.fine if self.fine != "none" else self.ranker

    def validate(self, where: str) -> None:
        require(bool(self.channels), f"{where}.channels", "an arm needs at least one recall channel")
        for name, quota in self.channels.items():
            require(name in CHANNELS, f"{where}.channels.{name}",
                    f"unknown channel '{name}'; available channels are {sorted(CHANNELS)}")
            require(quota >= 1, f"{where}.channels.{name}", f"quota must be at least 1, got {quota}")
        for key in ("ranker", "coarse", "fine"):
            value = getattr(self, key)
            require(value == "none" or value in RANKERS, f"{where}.{key}",
                    f"unknown ranker '{value}'; available rankers are {sorted(RANKERS)} or 'none'")
        require(self.ranker == "none" or self.fine == "none", f"{where}.ranker",
                "set either 'ranker' (the old name) or 'fine', not both")
        require(self.coarse_keep >= 1, f"{where}.coarse_keep", f"must be at least 1, got {self.coarse_keep}")
        require(0 <= self.share <= 100, f"{where}.share", f"must be between 0 and 100, got {self.share}")
