"""What the Prefect UI's Run form shows for each deployed flow: the presets as dropdowns taken
from configs/, a description on every parameter, no internal parameter."""
from __future__ import annotations

from pathlib import Path

from prefect.utilities.callables import parameter_schema

from flows.serve_deployments import FLOWS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _schema(f) -> dict:
    return parameter_schema(f).model_dump_for_openapi()["properties"]


def test_presets_are_dropdowns_of_the_config_folders():
    props = _schema(next(f for f in FLOWS if f.name == "campaign"))
    assert props["scenario"]["enum"] == sorted(p.stem for p in (CONFIGS / "scenarios").glob("*.yaml"))
    assert props["experiment"]["enum"] == sorted(p.stem for p in (CONFIGS / "experiments").glob("*.yaml"))
    assert props["scale"]["enum"] == ["local", "dask"]
    assert props["days"]["type"] == "integer" and props["days"]["default"] == 3


def test_every_parameter_is_described_and_none_is_internal():
    for f in FLOWS:
        props = _schema(f)
        assert "parent_run_id" not in props, f.name
        undescribed = [k for k, v in props.items() if not v.get("description")]
        assert undescribed == [], (f.name, undescribed)
