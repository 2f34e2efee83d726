"""The one builder of an experiment's pipelines from a folder of trained models.

The simulator, the MLflow model (flows/pipeline_model.py) and the recall replay all build their
pipelines here, from the same folder layout (`<models>/<channel or ranker name>/`), so what is
served and what is replayed cannot drift apart.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from components.ranking import RANKERS
from components.recall import CHANNELS
from components.serving.config import ArmConfig
from components.serving.pipeline import Pipeline


def build_pipelines(arms: Mapping[str, ArmConfig], slate_size: int, models: Path) -> dict[str, Pipeline]:
    """Each arm's pipeline; every channel and ranker is loaded once and shared by the arms using it."""
    channels = {n: CHANNELS[n].load(models / n) for n in sorted({ch for a in arms.values() for ch in a.channels})}
    needed = {r for a in arms.values() for r in (a.fine_ranker, a.coarse)} - {"none"}
    rankers = {r: RANKERS[r].load(models / r) for r in sorted(needed)}
    return {name: Pipeline(a, slate_size, channels, rankers.get(a.fine_ranker), rankers.get(a.coarse))
            for name, a in arms.items()}
