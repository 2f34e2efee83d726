"""common/typedconf.py: strict, typed loading of frozen dataclasses."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from common.typedconf import ConfigError, from_mapping, load_yaml, require, to_mapping


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    count: int = 1

    def validate(self, where: str) -> None:
        require(self.count >= 0, f"{where}.count", f"must be >= 0, got {self.count}")


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["fast", "slow"] = "fast"
    enabled: bool = False
    inner: Inner = field(default_factory=Inner)
    tags: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    limit: int | None = None


def test_valid_mapping_builds_typed_objects():
    obj = from_mapping(Outer, {"name": "a", "mode": "slow", "enabled": True,
                               "inner": {"rate": 2, "count": 3}, "tags": ["x", "y"],
                               "weights": {"p": 1, "q": 0.5}, "limit": 4})
    assert obj == Outer(name="a", mode="slow", enabled=True, inner=Inner(rate=2.0, count=3),
                        tags=("x", "y"), weights={"p": 1.0, "q": 0.5}, limit=4)
    assert isinstance(obj.inner.rate, float)       # an int given for a float becomes a float
    assert isinstance(obj.tags, tuple)             # a YAML list given for a tuple becomes a tuple
    assert isinstance(obj.weights["p"], float)


def test_defaults_fill_missing_settings():
    assert from_mapping(Outer, {"name": "a"}) == Outer(name="a")


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError) as exc:
        from_mapping(Outer, {"name": "a", "enabeld": True})
    msg = str(exc.value)
    assert "'enabeld'" in msg
    assert "did you mean 'enabled'" in msg
    assert "config" in msg


def test_unknown_key_without_close_match_lists_the_allowed_settings():
    with pytest.raises(ConfigError) as exc:
        from_mapping(Outer, {"name": "a", "zzzqqq": 1})
    msg = str(exc.value)
    assert "'zzzqqq'" in msg
    assert "did you mean" not in msg
    for allowed in ("enabled", "inner", "limit", "mode", "name", "tags", "weights"):
        assert allowed in msg


def test_unknown_key_in_a_nested_dataclass_names_the_dotted_path():
    with pytest.raises(ConfigError) as exc:
        from_mapping(Outer, {"name": "a", "inner": {"rat": 1.0}})
    msg = str(exc.value)
    assert "config.inner" in msg
    assert "'rat'" in msg
    assert "did you mean 'rate'" in msg


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(value):
    with pytest.raises(ConfigError, match=r"config\.inner\.count.*integer"):
        from_mapping(Outer, {"name": "a", "inner": {"count": value}})


def test_float_is_not_an_int():
    with pytest.raises(ConfigError, match=r"config\.inner\.count"):
        from_mapping(Outer, {"name": "a", "inner": {"count": 1.5}})


@pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
def test_string_bool_none_or_list_is_not_a_float(value):
    with pytest.raises(ConfigError, match=r"config\.inner\.rate.*number"):
        from_mapping(Outer, {"name": "a", "inner": {"rate": value}})


def test_int_is_not_a_bool():
    with pytest.raises(ConfigError, match=r"config\.enabled.*true or false"):
        from_mapping(Outer, {"name": "a", "enabled": 1})


def test_number_is_not_a_string():
    with pytest.raises(ConfigError, match=r"config\.name.*string"):
        from_mapping(Outer, {"name": 3})


def test_literal_accepts_listed_values_and_rejects_others():
    assert from_mapping(Outer, {"name": "a", "mode": "slow"}).mode == "slow"
    with pytest.raises(ConfigError) as exc:
        from_mapping(Outer, {"name": "a", "mode": "medium"})
    msg = str(exc.value)
    assert "config.mode" in msg and "'medium'" in msg
    assert "fast" in msg and "slow" in msg


def test_optional_accepts_none_and_checks_the_inner_type():
    assert from_mapping(Outer, {"name": "a", "limit": None}).limit is None
    with pytest.raises(ConfigError, match=r"config\.limit"):
        from_mapping(Outer, {"name": "a", "limit": "ten"})


def test_dict_and_list_values_are_checked_with_their_path():
    with pytest.raises(ConfigError, match=r"config\.weights\.q"):
        from_mapping(Outer, {"name": "a", "weights": {"p": 1.0, "q": "heavy"}})
    with pytest.raises(ConfigError, match=r"config\.weights.*mapping"):
        from_mapping(Outer, {"name": "a", "weights": [1.0]})
    with pytest.raises(ConfigError, match=r"config\.tags\[1\]"):
        from_mapping(Outer, {"name": "a", "tags": ["x", 2]})
    with pytest.raises(ConfigError, match=r"config\.tags.*list"):
        from_mapping(Outer, {"name": "a", "tags": "x"})


@dataclass(frozen=True)
class WithMapping:
    weights: Mapping[str, float] = field(default_factory=dict)


def test_mapping_typed_setting_is_converted_like_a_dict():
    # _convert has a branch meant for Mapping[...] settings (typedconf.py, the dict branch)
    assert from_mapping(WithMapping, {"weights": {"a": 1}}).weights == {"a": 1.0}
    with pytest.raises(ConfigError, match=r"config\.weights\.a.*number"):
        from_mapping(WithMapping, {"weights": {"a": "x"}})


def test_nested_validate_runs_and_names_the_setting():
    with pytest.raises(ConfigError, match=r"config\.inner\.count: must be >= 0, got -1"):
        from_mapping(Outer, {"name": "a", "inner": {"count": -1}})


def test_nested_value_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"config\.inner.*mapping"):
        from_mapping(Outer, {"name": "a", "inner": 3})


def test_missing_required_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="name"):
        from_mapping(Outer, {"mode": "fast"})


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        from_mapping(Outer, ["name", "a"])


def test_round_trip_to_mapping_from_mapping():
    obj = Outer(name="a", mode="slow", enabled=True, inner=Inner(rate=0.25, count=7),
                tags=("x", "y"), weights={"p": 1.5}, limit=None)
    data = to_mapping(obj)
    assert data == {"name": "a", "mode": "slow", "enabled": True,
                    "inner": {"rate": 0.25, "count": 7}, "tags": ["x", "y"],
                    "weights": {"p": 1.5}, "limit": None}
    assert from_mapping(Outer, data) == obj
    # plain data: it survives YAML too
    assert from_mapping(Outer, yaml.safe_load(yaml.safe_dump(data))) == obj


def test_load_yaml_reads_a_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: a\ninner: {rate: 1, count: 2}\ntags: [t]\n")
    assert load_yaml(Outer, path) == Outer(name="a", inner=Inner(rate=1.0, count=2), tags=("t",))


def test_load_yaml_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc:
        load_yaml(Outer, path)
    assert str(path) in str(exc.value)
    assert "does not exist" in str(exc.value)


def test_load_yaml_directory_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(Outer, tmp_path)


def test_load_yaml_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: a\ninner: {rate: 1, count: [\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(Outer, path)
    assert "broken.yaml" in str(exc.value)
    assert "not valid YAML" in str(exc.value)


def test_load_yaml_errors_are_prefixed_with_the_file_name(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: a\nmdoe: fast\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(Outer, path)
    assert str(exc.value).startswith("typo.yaml: unknown setting 'mdoe'")
    assert "did you mean 'mode'" in str(exc.value)


def test_empty_yaml_file_means_all_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert load_yaml(Inner, path) == Inner()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    require(True, "x", "never raised")
    with pytest.raises(ConfigError, match="^x.y: bad$"):
        require(False, "x.y", "bad")
