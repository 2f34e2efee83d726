"""A simulated day as the benches run it in one process, without Prefect: the same story and
components calls the flows make (flows/stages.py), in the same order."""
from __future__ import annotations

from collections.abc import Callable

from components import samples, training
from components.features.store import build_features
from components.lake import Lake
from story import models
from story.campaign import Campaign
from story.day import run_day
from story.world import publish_catalog


def serve_day(c: Campaign, day: int, features: Callable[[Lake, int], None] = build_features) -> int:
    """Publish the catalogue and features, serve the day (bootstrap models first on day 0) and
    build its samples -> the sample rows. `features` builds (and may sync) the day's features."""
    publish_catalog(c, day)
    features(c.lake, day)
    if day == 0:
        models.train_bootstrap(c)
    run_day(c, day)
    return samples.build_samples(c.lake, day)


def train_day(c: Campaign, day: int) -> dict[str, float]:
    """Every channel and ranker the experiment needs, on the lake through `day` -> their metrics."""
    out = c.models_dir(day)
    return training.train_channels(c.lake, day, c.experiment, out) | \
        training.train_rankers(c.lake, day, c.experiment, out)
