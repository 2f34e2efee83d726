"""bench/loop.py: one campaign's figures, and several seeds' mean with their spread."""
from __future__ import annotations

import dataclasses
import json

import pytest

from bench import loop
from components.experiment import load_experiment
from components.features.store import build_features
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import run_day
from story.report import report_day
from story.world import publish_catalog
from tests.story.test_day import train_and_open_next_day


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Two one-day tiny campaigns, scenario seeds 1 and 2, where --seeds looks for them."""
    root = tmp_path_factory.mktemp("loop")
    exp = load_experiment("default")
    for seed in (1, 2):
        c = create_campaign(root / f"seed={seed}", "t", dataclasses.replace(load_scenario("tiny"), seed=seed), exp, None)
        publish_catalog(c, 0)
        build_features(c.lake, 0)
        models.train_bootstrap(c)
        run_day(c, 0)
        report_day(c, 0)
        train_and_open_next_day(c, 0)
        run_day(c, 1)
        report_day(c, 1)
    return root


def test_several_seeds_give_the_mean_and_each_seeds_figures(seeded, tmp_path):
    out = tmp_path / "loop.json"
    assert loop.main(["--data-dir", str(seeded), "--reuse", "--seeds", "1,2", "--out", str(out), "--no-results"]) == 0
    entry = json.loads(out.read_text())["tiny/itemcf-recall"]
    one, two = (loop.figures(seeded / f"seed={s}") for s in (1, 2))
    assert entry["seeds"] == json.loads(json.dumps({"1": one, "2": two}))
    for arm, cell in entry["days"]["1"].items():
        norms = [one["1"][arm]["norm"], two["1"][arm]["norm"]]
        assert cell["norm"] == pytest.approx(sum(norms) / 2, abs=1e-4)
        assert (cell["norm_min"], cell["norm_max"]) == (min(norms), max(norms))
        assert cell["requests"] == round((one["1"][arm]["requests"] + two["1"][arm]["requests"]) / 2)
    assert one != two                                      # the seeds drew different worlds


def test_one_campaign_is_read_as_it_is_and_a_missing_seed_is_one_line(seeded, tmp_path, capsys):
    out = tmp_path / "loop.json"
    assert loop.main(["--data-dir", str(seeded / "seed=1"), "--reuse", "--out", str(out), "--no-results"]) == 0
    assert json.loads(out.read_text())["tiny/itemcf-recall"]["days"] == loop.figures(seeded / "seed=1")
    assert loop.main(["--data-dir", str(seeded), "--reuse", "--seeds", "1,3", "--out", str(out), "--no-results"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed=3 holds no campaign" in err[0]
