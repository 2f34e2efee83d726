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


def test_world_knobs_are_typed_fields_of_the_form():
    schema = parameter_schema(next(f for f in FLOWS if f.name == "campaign")).model_dump_for_openapi()
    knobs = schema["definitions"]["WorldKnobs"]["properties"]
    assert {"users", "items", "new_items_per_day", "organic", "drift", "fatigue"} <= set(knobs)
    assert all(v.get("description") for v in knobs.values())
    assert {"type": "integer", "minimum": 1} in knobs["users"]["anyOf"]
    assert {"type": "number", "minimum": 0, "maximum": 1} in knobs["organic"]["anyOf"]


def test_world_knobs_change_the_manifest_and_bad_ones_are_one_line(tmp_path):
    import json

    import pytest

    from common.typedconf import ConfigError
    from flows.campaign import prepare_campaign
    from flows.params import WorldKnobs

    data = tmp_path / "data"
    prepare_campaign.fn(str(data), "tiny", "default", None, None, WorldKnobs(users=321, organic=0.25))
    manifest = json.loads((data / "campaign.json").read_text())
    assert manifest["scenario"]["users"]["n"] == 321 and manifest["scenario"]["behavior"]["organic"] == 0.25
    with pytest.raises(ConfigError, match="comes from the log it is fitted to"):
        prepare_campaign.fn(str(tmp_path / "b"), "beauty", "default", None, None, WorldKnobs(items=10))
    with pytest.raises(ValueError, match="extra"):
        WorldKnobs.model_validate({"userz": 3})


def test_cli_world_knobs_parse_and_refuse_in_one_line():
    import pytest

    from common.typedconf import ConfigError
    from flows.params import knob_overrides, parse_knobs

    assert knob_overrides(parse_knobs(["users=2000", "organic=0.3"])) == {"users.n": 2000, "behavior.organic": 0.3}
    assert parse_knobs([]) is None
    with pytest.raises(ConfigError, match=r"--world 'userz=3': expected KNOB=VALUE"):
        parse_knobs(["userz=3"])
    with pytest.raises(ConfigError, match=r"--world organic='2'.*less than or equal to 1"):
        parse_knobs(["organic=2"])


def test_online_store_url_serves_from_redis_in_the_manifest_and_a_bad_one_is_one_line(tmp_path):
    import json

    import pytest

    from common.typedconf import ConfigError
    from flows.campaign import prepare_campaign

    data = tmp_path / "data"
    prepare_campaign.fn(str(data), "tiny", "default", None, None, None, "redis://127.0.0.1:6390/2")
    store = json.loads((data / "campaign.json").read_text())["experiment"]["online_store"]
    assert (store["kind"], store["url"], store["cache_size"]) == ("redis", "redis://127.0.0.1:6390/2", 100_000)
    prepare_campaign.fn(str(tmp_path / "e"), "tiny", "default", None, None, None, "")
    assert json.loads((tmp_path / "e" / "campaign.json").read_text())["experiment"]["online_store"]["kind"] == "embedded"
    with pytest.raises(ConfigError, match=r"^online_store.url: must be a redis://"):
        prepare_campaign.fn(str(tmp_path / "b"), "tiny", "default", None, None, None, "http://127.0.0.1:6379")
    props = _schema(next(f for f in FLOWS if f.name == "campaign"))
    assert "Redis URL" in props["online_store"]["description"]
