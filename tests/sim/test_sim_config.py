"""sim/config.py: scenario presets load strictly."""
from __future__ import annotations

import pytest

from common.typedconf import ConfigError, from_mapping, to_mapping
from sim.config import ItemConfig, UserConfig, WorldConfig, load_scenario


@pytest.mark.parametrize("name", ["tiny", "small", "large", "cold-start", "drift", "beauty"])
def test_presets_load(name):
    cfg = load_scenario(name)
    assert isinstance(cfg, WorldConfig)
    assert cfg.name == name
    assert isinstance(cfg.users, UserConfig) and isinstance(cfg.items, ItemConfig)
    assert cfg.users.n >= 1 and cfg.items.n >= cfg.items.n_categories
    assert isinstance(cfg.behavior.base_logit, float)


def test_tiny_preset_values():
    cfg = load_scenario("tiny")
    assert (cfg.seed, cfg.latent_dim, cfg.users.n, cfg.items.n, cfg.items.n_categories) == (3, 8, 600, 300, 6)
    assert cfg.traffic.sessions_per_user == 2.0 and cfg.items.new_per_day == 5


def test_scenarios_differ_where_they_say():
    large, cold, drift, small = (load_scenario(n) for n in ("large", "cold-start", "drift", "small"))
    assert (large.users.n, large.items.n) == (1_000_000, 100_000)
    assert cold.items.new_per_day / cold.items.n >= 0.1 and cold.behavior.novelty > small.behavior.novelty
    assert drift.behavior.drift >= 5 * small.behavior.drift


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario("no-such-scenario")


def test_unknown_top_level_key_in_a_scenario_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nseed: 1\nlatent_dimm: 4\n")
    with pytest.raises(ConfigError) as exc:
        load_scenario(str(path))
    msg = str(exc.value)
    assert "mine.yaml" in msg
    assert "'latent_dimm'" in msg
    assert "did you mean 'latent_dim'" in msg


def test_unknown_nested_key_in_a_scenario_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nusers: {n: 10, taste_nosie: 0.1}\n")
    with pytest.raises(ConfigError) as exc:
        load_scenario(str(path))
    msg = str(exc.value)
    assert "mine.yaml.users" in msg
    assert "'taste_nosie'" in msg
    assert "did you mean 'taste_noise'" in msg


def test_scenario_file_with_a_wrong_type(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nitems: {n: many}\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml\.items\.n"):
        load_scenario(str(path))


@pytest.mark.parametrize("data, where", [
    ({"items": {"n": 5, "n_categories": 6}}, "config.items.n_categories"),
    ({"users": {"n": 0}}, "config.users.n"),
    ({"latent_dim": 1}, "config.latent_dim"),
    ({"seed": -1}, "config.seed"),
    ({"traffic": {"sessions_per_user": 0}}, "config.traffic.sessions_per_user"),
    ({"traffic": {"requests_per_session": 0.5}}, "config.traffic.requests_per_session"),
    ({"traffic": {"peak_hour": 24}}, "config.traffic.peak_hour"),
    ({"traffic": {"diurnal_amplitude": 1.0}}, "config.traffic.diurnal_amplitude"),
    ({"users": {"activity": "zipf"}}, "config.users.activity"),
    ({"users": {"activity_alpha": 1.0}}, "config.users.activity_alpha"),
    ({"users": {"churn_rate": 1.5}}, "config.users.churn_rate"),
    ({"items": {"n": 10, "n_categories": 4, "subcategories": 3}}, "config.items.n_categories"),
    ({"behavior": {"content_weight": 1.2}}, "config.behavior.content_weight"),
    ({"behavior": {"novelty_days": 0}}, "config.behavior.novelty_days"),
    ({"oracle": {"random_draws": 0}}, "config.oracle.random_draws"),
    # contradictions between sections name the setting that has to give
    ({"users": {"favourite_categories": 5}, "items": {"n_categories": 3}}, "config.users.favourite_categories"),
    ({"collab_dim": 0, "behavior": {"content_weight": 0.5}}, "config.behavior.content_weight"),
    ({"users": {"churn_rate": 1.0}}, "config.users.churn_rate"),
    ({"behavior": {"position_decay": -0.1}}, "config.behavior.position_decay"),
])
def test_validation_names_the_setting(data, where):
    with pytest.raises(ConfigError) as exc:
        from_mapping(WorldConfig, data)
    assert str(exc.value).startswith(where)


def test_scenario_round_trip():
    cfg = load_scenario("small")
    assert from_mapping(WorldConfig, to_mapping(cfg)) == cfg
