"""bench/loop_offline.py on a two-day tiny campaign whose users also find items on their own."""
from __future__ import annotations

import dataclasses
import json

from bench import loop_offline
from components.experiment import load_experiment
from components.features.store import build_features
from sim.config import load_scenario
from story import models
from story.campaign import create_campaign
from story.day import run_day
from story.world import publish_catalog
from tests.story.test_day import train_and_open_next_day


def test_channels_are_scored_on_the_next_days_organic_takes(tmp_path, capsys):
    tiny = load_scenario("tiny")
    world = dataclasses.replace(tiny, behavior=dataclasses.replace(tiny.behavior, organic=0.5))
    exp = load_experiment("default")
    c = create_campaign(tmp_path / "c", "t", world, exp, None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    models.train_bootstrap(c)
    run_day(c, 0)
    train_and_open_next_day(c, 0)
    run_day(c, 1)
    out = tmp_path / "offline.json"
    assert loop_offline.main(["--data-dir", str(c.data_dir), "--days", "1", "--ks", "10,50", "--out", str(out),
                              "--no-results"]) == 0
    entry = json.loads(out.read_text())["tiny/" + exp.name]["days"]["1"]
    assert set(entry) == set(exp.channels_needed()) - {"explore"}
    for name, figures in entry.items():
        assert figures["users"] > 0, name
        assert 0 <= figures["recall@10"] <= figures["recall@50"] <= 1, name
    # Item-CF, fitted on day 0's clicks and takes, finds some of what users took on day 1.
    assert entry["itemcf"]["recall@50"] > 0
    # A day with no organic takes, a folder with no campaign: one line each.
    assert loop_offline.main(["--data-dir", str(c.data_dir), "--days", "5", "--out", str(out), "--no-results"]) == 2
    assert "no organic takes on day(s) [5]" in capsys.readouterr().err
    assert loop_offline.main(["--data-dir", str(tmp_path), "--out", str(out), "--no-results"]) == 2
    assert "holds no campaign" in capsys.readouterr().err
