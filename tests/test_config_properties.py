"""Property tests of the config loaders: whatever YAML-like data comes in, the result is a config or
a one-line ConfigError naming a setting; nothing else escapes.
"""
from __future__ import annotations

import copy
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.typedconf import ConfigError, from_mapping, load_yaml, to_mapping
from components.experiment import ExperimentConfig, load_experiment
from sim.config import WorldConfig, load_scenario

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = {WorldConfig: to_mapping(load_scenario("tiny")), ExperimentConfig: to_mapping(load_experiment("default"))}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["popular", "itemcf", "explore", "mlp", "none", "control", "treatment", "100", ""]),
)
keys = st.one_of(st.text(max_size=10), st.integers(-3, 3), st.booleans(), st.none(),
                 st.sampled_from(["n", "share", "channels", "ranker", "seed", "arms", "models", "users"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def _paths(data, prefix=()):
    """Every place in a nested mapping/list where a value sits, the root included."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, cls):
    """A valid config's data with a few settings replaced, added or deleted anywhere inside it."""
    data = copy.deepcopy(BASES[cls])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(data))))
        if not path:
            if draw(st.booleans()):
                data = draw(values)
            continue
        node = data
        for key in path[:-1]:
            node = node[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[path[-1]] = draw(values)
        elif action == "delete":
            del node[path[-1]]
        elif isinstance(node, dict):
            node[draw(keys)] = draw(values)
        if not isinstance(data, (dict, list)):
            break
    return data


def _load(cls, data):
    try:
        return from_mapping(cls, data, "config")
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, msg
        assert msg.startswith("config"), msg      # it names the setting, from the top
        return None


@pytest.mark.parametrize("cls", [WorldConfig, ExperimentConfig])
@SETTINGS
@given(data=st.data())
def test_mutated_configs_load_or_raise_config_error(cls, data):
    obj = _load(cls, data.draw(mutated(cls)))
    if obj is not None:   # what loads is a config that survives its own round trip
        assert from_mapping(cls, to_mapping(obj), "config") == obj


@pytest.mark.parametrize("cls", [WorldConfig, ExperimentConfig])
@SETTINGS
@given(data=values)
def test_arbitrary_data_loads_or_raises_config_error(cls, data):
    _load(cls, data)


@SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_yaml_text_loads_or_raises_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    for cls in (WorldConfig, ExperimentConfig):
        try:
            load_yaml(cls, path)
        except ConfigError as exc:
            assert "\n" not in str(exc)


@SETTINGS
@given(blob=st.binary(max_size=64))
def test_arbitrary_bytes_load_or_raise_config_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("yaml") / "world.yaml"
    path.write_bytes(blob)
    try:
        load_yaml(WorldConfig, path)
    except ConfigError as exc:
        assert "world.yaml" in str(exc)


def test_non_finite_numbers_are_refused():
    data = copy.deepcopy(BASES[WorldConfig])
    data["behavior"]["base_logit"] = math.nan
    with pytest.raises(ConfigError, match=r"^config\.behavior\.base_logit: expected a finite number, got nan$"):
        from_mapping(WorldConfig, data, "config")
    data["behavior"]["base_logit"] = 10**400
    with pytest.raises(ConfigError, match="finite number"):
        from_mapping(WorldConfig, data, "config")


def test_a_missing_required_setting_is_named():
    data = copy.deepcopy(BASES[ExperimentConfig])
    del data["control"]
    with pytest.raises(ConfigError, match=r"^config: missing required setting 'control' \(required settings"):
        from_mapping(ExperimentConfig, data, "config")


def test_not_utf8_and_unknown_preset_are_config_errors(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not a UTF-8 text file"):
        load_yaml(WorldConfig, path)
    with pytest.raises(ConfigError, match=r"^scenario 'huge' does not exist: presets are \[.*'tiny'.*\]"):
        load_scenario("huge")
    with pytest.raises(ConfigError, match=r"^experiment 'nope' does not exist: presets are \[.*'default'"):
        load_experiment("nope")


def test_yaml_error_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nusers: {n: [1,\n  2\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(WorldConfig, path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{path}: not valid YAML")


@pytest.mark.parametrize("setting, value, message", [
    (("models", "mlp", "hidden"), 0, "config.models.mlp.hidden: must be at least 1, got 0"),
    (("models", "mlp", "lr"), -0.1, "config.models.mlp.lr: must be > 0, got -0.1"),
    (("models", "popular", "decay"), 1.5, "config.models.popular.decay: must be in (0, 1], got 1.5"),
    (("models", "itemcf", "neighbours"), 0, "config.models.itemcf.neighbours: must be at least 1, got 0"),
    (("seed",), 11, "config: setting 'seed' was removed (it seeded nothing: a model's randomness is "
                    "models.<model>.seed"),
    (("slate_size",), 0, "config.slate_size: must be between 1 and 100"),
    (("arms", "control", "share"), 150, "config.arms.control.share: must be between 0 and 100, got 150"),
    (("arms", "control", "ranker"), "xgboost", "config.arms.control.ranker: unknown ranker 'xgboost'; "
                                               "available rankers are ['coarse', 'deepfm', 'din', 'mlp'] or 'none'"),
    (("arms", "control", "channels"), {}, "config.arms.control.channels: an arm needs at least one"),
    (("arms", "control", "channels", "popular"), 0, "config.arms.control.channels.popular: quota must be"),
])
def test_out_of_range_experiment_settings_are_named(setting, value, message):
    data = copy.deepcopy(BASES[ExperimentConfig])
    node = data
    for key in setting[:-1]:
        node = node[key]
    node[setting[-1]] = value
    with pytest.raises(ConfigError) as exc:
        from_mapping(ExperimentConfig, data, "config")
    assert str(exc.value).startswith(message), str(exc.value)


def test_arm_names_must_be_usable_as_metric_names():
    data = copy.deepcopy(BASES[ExperimentConfig])
    data["arms"]["treat ment!"] = data["arms"].pop("treatment")
    with pytest.raises(ConfigError, match=r"config\.arms\.treat ment!: an arm name may use letters, digits"):
        from_mapping(ExperimentConfig, data, "config")


@pytest.mark.parametrize("setting, value, message", [
    (("users", "n"), 0, "config.users.n: must be at least 1, got 0"),
    (("items", "n_categories"), 10**6, "config.items.n_categories: n_categories * subcategories"),
    (("latent_dim",), 1, "config.latent_dim: must be at least 2, got 1"),
    (("traffic", "sessions_per_user"), 0, "config.traffic.sessions_per_user: must be > 0"),
    (("seed",), True, "config.seed: expected an integer, got True"),
    (("users",), [1], "config.users: expected a mapping of settings"),
])
def test_out_of_range_scenario_settings_are_named(setting, value, message):
    data = copy.deepcopy(BASES[WorldConfig])
    node = data
    for key in setting[:-1]:
        node = node[key]
    node[setting[-1]] = value
    with pytest.raises(ConfigError) as exc:
        from_mapping(WorldConfig, data, "config")
    assert str(exc.value).startswith(message), str(exc.value)


def test_presets_survive_a_yaml_round_trip():
    for cls, data in BASES.items():
        assert from_mapping(cls, yaml.safe_load(yaml.safe_dump(data)), "config") == from_mapping(cls, data)
