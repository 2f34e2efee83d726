"""components/experiment.py and components/serving/config.py: experiments and arms, checked when read."""
from __future__ import annotations

import copy

import pytest
import yaml

from common.typedconf import ConfigError, from_mapping, to_mapping
from components.experiment import ExperimentConfig, load_experiment
from components.serving import ArmConfig

BASE = {
    "name": "exp",
    "control": "control",
    "slate_size": 4,
    "arms": {
        "control": {"share": 50, "channels": {"popular": 10}, "ranker": "none"},
        "treatment": {"share": 50, "channels": {"popular": 5, "itemcf": 5}, "ranker": "mlp"},
    },
}


def with_changes(**changes):
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        node[last] = value
    return data


def test_default_experiment_loads():
    exp = load_experiment("default")
    assert isinstance(exp, ExperimentConfig)
    assert exp.control in exp.arms
    assert sum(a.share for a in exp.arms.values()) == 100
    assert all(isinstance(a, ArmConfig) for a in exp.arms.values())
    assert exp.effective_salt == exp.name           # no salt given
    assert exp.channels_needed() == sorted({c for a in (*exp.arms.values(), exp.logging_policy)
                                            for c in a.channels})
    assert exp.logging_policy.ranker == "none"
    assert exp.rankers_needed() == ["mlp"]
    assert exp.models.popular.decay == 0.7


def test_default_experiment_round_trips():
    exp = load_experiment("default")
    assert from_mapping(ExperimentConfig, yaml.safe_load(yaml.safe_dump(to_mapping(exp)))) == exp


def test_a_valid_mapping_loads():
    exp = from_mapping(ExperimentConfig, with_changes(salt="s1"))
    assert exp.effective_salt == "s1"
    assert exp.arms["treatment"].channels == {"popular": 5, "itemcf": 5}
    assert exp.channels_needed() == ["explore", "itemcf", "popular"]   # explore: the logging policy


def test_shares_must_sum_to_100():
    with pytest.raises(ConfigError) as exc:
        from_mapping(ExperimentConfig, with_changes(arms__treatment__share=40))
    msg = str(exc.value)
    assert "config.arms" in msg
    assert "sum to 100" in msg and "90" in msg
    assert "control=50" in msg and "treatment=40" in msg


def test_unknown_channel_is_named():
    data = with_changes(arms__treatment__channels={"popular": 5, "twotower": 5})
    with pytest.raises(ConfigError) as exc:
        from_mapping(ExperimentConfig, data)
    msg = str(exc.value)
    assert "config.arms.treatment.channels.twotower" in msg
    assert "unknown channel 'twotower'" in msg
    assert "itemcf" in msg and "popular" in msg


def test_unknown_ranker_is_named():
    with pytest.raises(ConfigError) as exc:
        from_mapping(ExperimentConfig, with_changes(arms__treatment__ranker="xgboost"))
    msg = str(exc.value)
    assert "config.arms.treatment.ranker" in msg
    assert "unknown ranker 'xgboost'" in msg and "deepfm" in msg and "mlp" in msg


def test_control_must_be_an_arm():
    with pytest.raises(ConfigError) as exc:
        from_mapping(ExperimentConfig, with_changes(control="baseline"))
    msg = str(exc.value)
    assert "config.control" in msg
    assert "'baseline' is not one of the arms" in msg
    assert "control" in msg and "treatment" in msg


def test_quotas_must_fill_a_slate():
    with pytest.raises(ConfigError, match=r"treatment.*quotas sum to 10, fewer than slate_size 12"):
        from_mapping(ExperimentConfig, with_changes(slate_size=12, arms__control__channels={"popular": 20}))


@pytest.mark.parametrize("changes, fragment", [
    ({"arms__treatment__channels": {"popular": 0, "itemcf": 10}}, "quota must be at least 1"),
    ({"arms__treatment__channels": {}}, "at least one recall channel"),
    ({"arms__treatment__share": 150, "arms__control__share": -50}, "between 0 and 100"),
    ({"arms": {}}, "at least one arm"),
    ({"slate_size": 0}, "slate_size"),
])
def test_other_invalid_experiments(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        from_mapping(ExperimentConfig, with_changes(**changes))


def test_typo_in_an_arm_gets_a_suggestion(tmp_path):
    data = with_changes()
    data["arms"]["treatment"]["rankr"] = data["arms"]["treatment"].pop("ranker")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_experiment(str(path))
    msg = str(exc.value)
    assert "typo.yaml.arms.treatment" in msg and "'rankr'" in msg and "did you mean 'ranker'" in msg


def test_unknown_experiment_preset():
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment("no-such-experiment")
