"""Which models serve a day: the folder trained the day before, built by the one pipeline builder."""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from components import training
from components.lake import MissingPartitionError
from components.serving import ArmConfig, Pipeline, build_pipelines
from story.campaign import BOOTSTRAP_DAY, Campaign


def train_bootstrap(c: Campaign) -> Path:
    """Train the logging policy's models, which serve day 0: a training step like any day's, so
    that serving never fits a model."""
    out = c.models_dir(BOOTSTRAP_DAY)
    # Staged and renamed into place, as every day's models are, so serving never reads half a set.
    staging = out.with_name(f".staging-{out.name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    training.train_bootstrap(c.lake, c.experiment, staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def require_models(c: Campaign, day: int) -> Path:
    """The models that serve `day`: trained on day - 1 (the bootstrap's for day 0), which must have run."""
    models = c.models_dir(day - 1)
    if not models.is_dir():
        if day == 0:
            raise MissingPartitionError(f"day 0 is served by the logging policy's models, which are not in "
                                        f"{models}; train them first (story.models.train_bootstrap)")
        done = c.lake.days("ab_daily")
        raise MissingPartitionError(
            f"day {day} is served by the models trained on day {day - 1}, which are not in "
            f"{models.parent}; run the days in order (days with reports: {done or 'none'})"
        )
    return models


def pipelines_from_folder(c: Campaign, day: int, arms: Mapping[str, ArmConfig]) -> dict[str, Pipeline]:
    """The arms' pipelines serving `day`, from the campaign's models folder (not the registry)."""
    return build_pipelines(arms, c.experiment.slate_size, require_models(c, day))
