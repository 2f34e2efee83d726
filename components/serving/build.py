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


def _load(arms: list[ArmConfig], models: Path) -> tuple[dict, dict]:
    channels = {n: CHANNELS[n].load(models / n) for n in sorted({ch for a in arms for ch in a.channels})}
    needed = {r for a in arms for r in (a.fine_ranker, a.coarse)} - {"none"}
    return channels, {r: RANKERS[r].load(models / r) for r in sorted(needed)}


def build_pipelines(arms: Mapping[str, ArmConfig], slate_size: int, models: Path) -> dict[str, Pipeline]:
    """Each arm's pipeline; every channel and ranker is loaded once and shared by the arms using it,
    except an incremental arm's: its models move within the day, so it loads its own copies."""
    channels, rankers = _load([a for a in arms.values() if not a.incremental.enabled], models)
    out = {}
    for name, a in arms.items():
        ch, rk = _load([a], models) if a.incremental.enabled else (channels, rankers)
        out[name] = Pipeline(a, slate_size, ch, rk.get(a.fine_ranker), rk.get(a.coarse))
    return out
