"""The types of the flows' parameters as the Prefect UI shows them: the presets a folder of
configs/ holds become a dropdown (a Literal, read when the flows are imported)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def presets(kind: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml")))


# Literal[...] of a tuple is the Literal of its members: the form's choices follow the folders.
Scenario = Literal[presets("scenarios")]          # type: ignore[valid-type]
Experiment = Literal[presets("experiments")]      # type: ignore[valid-type]
Scale = Literal["local", "dask"]


def is_preset(kind: str, value: str) -> bool:
    return value in presets(kind)
