"""sim/calibrate.py and bench/calibration.py: fitting a world to a real log and measuring the gap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.calibration import BEAUTY, compare, picture, simulate_counts
from sim import calibrate


def test_read_sequences_makes_dense_pairs(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("1 10 12 10\n2 12 30\n")
    log = calibrate.read_sequences(path)
    np.testing.assert_array_equal(log.user, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(log.item, [0, 1, 0, 1, 2])
    np.testing.assert_array_equal(log.user_counts, [3, 2])
    (tmp_path / "bad.txt").write_text("1\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        calibrate.read_sequences(tmp_path / "bad.txt")


def test_estimators_recover_known_laws():
    rng = np.random.default_rng(0)
    sizes = 1000 / np.arange(1, 41) ** 0.9
    assert calibrate.zipf_exponent(sizes) == pytest.approx(0.9, abs=1e-6)
    assert calibrate.hill_alpha(1 + rng.pareto(2.0, 200_000)) == pytest.approx(2.0, rel=0.05)
    a, b = rng.normal(size=5000), rng.normal(size=5000)
    assert calibrate.ks_distance(a, b) < 0.05 and calibrate.wasserstein(a, b) < 0.06
    assert calibrate.wasserstein(a, a + 1.0) == pytest.approx(1.0, abs=1e-9)
    assert calibrate.ks_distance(a, a + 10) == 1.0


def test_kmeans_finds_planted_clusters():
    rng = np.random.default_rng(1)
    centres = np.eye(4)
    x = centres[np.repeat(np.arange(4), 50)] + 0.05 * rng.standard_normal((200, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = calibrate.kmeans(x, 4)
    assert all(len(set(labels[i * 50:(i + 1) * 50])) == 1 for i in range(4))
    assert len(set(labels)) == 4


@pytest.mark.skipif(not Path(BEAUTY).is_file(), reason="Amazon Beauty is not on this machine")
def test_fit_beauty_simulate_and_draw_the_picture(tmp_path):
    real = calibrate.read_sequences(BEAUTY, max_users=3000)
    fitted = calibrate.fit(real, n_categories=8)
    assert fitted.n_users == 3000 and fitted.activity_sigma > 0 and fitted.activity_alpha > 1
    cfg = calibrate.scenario(fitted)
    assert (cfg.users.n, cfg.items.n, cfg.items.n_categories) == (3000, fitted.n_items, 8)
    sim = simulate_counts(cfg, days=5)
    dist = compare(real, sim, min_count=1)
    assert set(dist) == {"user_activity", "item_popularity"}
    assert all(0 <= d["ks"] <= 1 and d["wasserstein"] >= 0 for d in dist.values())
    png = picture(real, sim, 1, tmp_path / "lake" / "calibration" / "beauty_vs_sim.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibration_command_writes_a_scenario_from_the_polished_knobs(tmp_path):
    import json

    import yaml

    from bench import calibration
    from tests.sim.test_fit import toy_log
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    out = tmp_path / "calibration.json"
    assert calibration.main(["--data", str(data), "--name", "tinyfit", "--search-users", "150", "--search-evals", "2",
                             "--polish-evals", "2", "--scenario-dir", str(tmp_path), "--out", str(out),
                             "--no-results"]) == 0
    search = json.loads(out.read_text())["calibration"]
    assert len(search["polish"]) == 2 and search["polish"][0]["popularity"] == search["search_knobs"]["popularity"]
    scenario = yaml.safe_load((tmp_path / "tinyfit.yaml").read_text())
    assert scenario["fit"]["popularity"] == search["knobs"]["popularity"]
