"""A campaign's data directory: its manifest (resolved configs), lake, models and world files."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from common.typedconf import ConfigError, from_mapping, to_mapping
from components.experiment import ExperimentConfig, load_experiment
from components.lake import Lake
from sim.config import WorldConfig, load_scenario
from sim.world import World, make_world

MANIFEST = "campaign.json"
# Every table a day's last stage (report) writes, and world_daily: a day is complete once all of
# them and its models exist. One left out lets a campaign killed between two of the report's writes
# resume past a day whose last tables were never written.
REPORT_TABLES = ("ab_daily", "latency_daily", "channel_latency_daily", "exposure_daily", "world_daily")
# The models that serve day 0 (the logging policy's) are trained before any day, as if on day -1.
BOOTSTRAP_DAY = -1


@dataclass(frozen=True)
class Campaign:
    data_dir: Path
    name: str
    scenario: WorldConfig
    experiment: ExperimentConfig
    tracking_uri: str

    @property
    def lake(self) -> Lake:
        return Lake(self.data_dir / "lake")

    def models_dir(self, day: int) -> Path:
        """Models trained on days <= `day`, which serve day + 1 (`bootstrap` serves day 0)."""
        return self.data_dir / "models" / ("bootstrap" if day == BOOTSTRAP_DAY else f"day={day:05d}")

    @property
    def world_dir(self) -> Path:
        """The world's own files (daily state, the day's plan, shard outputs): never read by the recommender."""
        return self.data_dir / "world"

    @property
    def world(self) -> World:
        return _world(self.scenario)

    def day_complete(self, day: int) -> bool:
        """Reported, with its models published: a resumed campaign need not run it again."""
        return all(self.lake.has(t, day) for t in REPORT_TABLES) and self.models_dir(day).is_dir()

    def first_incomplete_day(self, days: int) -> int:
        """The day a campaign of days 0..`days` resumes from; `days` + 1 when all are complete."""
        return next((d for d in range(days + 1) if not self.day_complete(d)), days + 1)

    def manifest(self) -> dict:
        return {"name": self.name, "scenario": to_mapping(self.scenario),
                "experiment": to_mapping(self.experiment), "tracking_uri": self.tracking_uri}


@lru_cache(maxsize=4)
def _world(config: WorldConfig) -> World:
    return make_world(config)


def default_tracking_uri(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"


def create_campaign(data_dir: Path, name: str, scenario: WorldConfig, experiment: ExperimentConfig,
                    tracking_uri: str | None) -> Campaign:
    """Write the manifest, or reuse the directory's when it holds the very same campaign."""
    data_dir.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(data_dir, name, scenario, experiment, tracking_uri or default_tracking_uri(data_dir))
    path = data_dir / MANIFEST
    if path.exists():
        existing = open_campaign(data_dir)
        if existing.manifest() != campaign.manifest():
            raise ConfigError(
                f"{data_dir} already holds campaign '{existing.name}' with other settings; "
                f"pass another --data-dir, or --fresh to delete it and start over"
            )
        return existing
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(campaign.manifest(), indent=2))
    tmp.replace(path)
    return campaign


def override(world: WorldConfig, settings: Mapping[str, Any]) -> WorldConfig:
    """The scenario with {dotted path: value} settings changed, checked as a scenario file is."""
    if not settings:
        return world
    fitted = [k for k in settings if k in ("users.n", "items.n")]
    if world.fitted and fitted:
        raise ConfigError(f"scenario {world.name}: {fitted[0]} comes from the log it is fitted to "
                          f"({world.fitted}); leave it empty or refit the scenario")
    data = to_mapping(world)
    for path, value in settings.items():
        *parents, key = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        if key not in node:
            raise ConfigError(f"scenario: unknown setting {path!r}")
        node[key] = value
    return from_mapping(WorldConfig, data, where=f"scenario {world.name}")


def with_online_store(exp: ExperimentConfig, url: str | None) -> ExperimentConfig:
    """The experiment served from the Redis server at `url` (online_store kind redis, its cache
    knobs kept), checked as the setting in a file is; None or empty keeps the experiment's store."""
    if not url:
        return exp
    store = replace(exp.online_store, kind="redis", url=url)
    store.validate("online_store")
    return replace(exp, online_store=store)


def resolve_campaign(data_dir: Path, scenario: str, experiment: str, seed: int | None,
                     name: str | None, settings: Mapping[str, Any] | None = None,
                     online_store: str | None = None) -> Campaign:
    """The campaign of a scenario and an experiment (preset names or YAML paths), its manifest
    written; `settings` ({dotted path: value}) change the scenario's, `online_store` (a Redis URL)
    the experiment's online store."""
    world = override(load_scenario(scenario), settings or {})
    if seed is not None:
        world = replace(world, seed=seed)
    exp = with_online_store(load_experiment(experiment), online_store)
    if world.effect.arm and world.effect.arm not in exp.arms:
        raise ConfigError(f"scenario.effect.arm: unknown arm '{world.effect.arm}'; the experiment's arms "
                          f"are {sorted(exp.arms)}")
    return create_campaign(data_dir, name or f"{exp.name}@{world.name}-seed{world.seed}", world, exp, None)


def open_campaign(data_dir: str | Path) -> Campaign:
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{data_dir} holds no campaign ({MANIFEST} missing); start one with `reclab campaign`")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is corrupt ({exc}); delete {data_dir} and re-run the campaign") from None
    return Campaign(
        data_dir=data_dir,
        name=m["name"],
        scenario=from_mapping(WorldConfig, m["scenario"], "campaign.scenario"),
        experiment=from_mapping(ExperimentConfig, m["experiment"], "campaign.experiment"),
        tracking_uri=m["tracking_uri"],
    )
