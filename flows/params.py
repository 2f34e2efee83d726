"""The types of the flows' parameters as the Prefect UI shows them: the presets a folder of
configs/ holds become a dropdown (a Literal, read when the flows are imported)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def presets(kind: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml")))


# Literal[...] of a tuple is the Literal of its members: the form's choices follow the folders.
Scenario = Literal[presets("scenarios")]          # type: ignore[valid-type]
Experiment = Literal[presets("experiments")]      # type: ignore[valid-type]
Scale = Literal["local", "dask"]


def is_preset(kind: str, value: str) -> bool:
    return value in presets(kind)


class WorldKnobs(BaseModel):
    """The scenario knobs a team turns most, typed for the Run form; an empty one keeps the preset's
    value. Applied over the preset before the campaign's manifest is written, so the manifest (and
    MLflow's params) hold the world that ran."""

    model_config = ConfigDict(extra="forbid")

    users: int | None = Field(None, ge=1, description="Users on day 0 (not for a world fitted to a log).")
    new_users_per_day: int | None = Field(None, ge=0, description="Users arriving on each later day.")
    items: int | None = Field(None, ge=1, description="Items on day 0 (not for a world fitted to a log).")
    new_items_per_day: int | None = Field(None, ge=0, description="Items arriving each later day: cold start.")
    organic: float | None = Field(None, ge=0, le=1, description="Share of visits that also take an item found "
                                                                 "on one's own (search, browsing), logged.")
    drift: float | None = Field(None, ge=0, description="Daily random-walk step of each user's taste.")
    fatigue: float | None = Field(None, ge=0, description="Utility lost per recent exposure of the same item.")
    position_decay: float | None = Field(None, ge=0, description="Examination at rank r is 1/(1+r)**decay.")
    churn_rate: float | None = Field(None, ge=0, le=1, description="Daily chance that an active user leaves.")


# Where each knob lives in the scenario (sim/config.py WorldConfig).
KNOB_PATHS = {"users": "users.n", "new_users_per_day": "users.new_per_day", "items": "items.n",
              "new_items_per_day": "items.new_per_day", "organic": "behavior.organic",
              "drift": "behavior.drift", "fatigue": "behavior.fatigue",
              "position_decay": "behavior.position_decay", "churn_rate": "users.churn_rate"}


def knob_overrides(knobs: WorldKnobs | dict | None) -> dict[str, object]:
    """The knobs set, as {dotted scenario path: value}."""
    if knobs is None:
        return {}
    knobs = knobs if isinstance(knobs, WorldKnobs) else WorldKnobs.model_validate(knobs)
    return {KNOB_PATHS[k]: v for k, v in knobs.model_dump().items() if v is not None}


def parse_knobs(pairs: list[str]) -> WorldKnobs | None:
    """`KNOB=VALUE` strings (the CLI's --world) -> WorldKnobs; a bad one is one ConfigError line."""
    from pydantic import ValidationError

    from common.typedconf import ConfigError

    if not pairs:
        return None
    data = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in KNOB_PATHS:
            raise ConfigError(f"--world {pair!r}: expected KNOB=VALUE with KNOB one of {sorted(KNOB_PATHS)}")
        data[key] = value
    try:
        return WorldKnobs.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--world {err['loc'][0]}={data[err['loc'][0]]!r}: {err['msg']}") from None
