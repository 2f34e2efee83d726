"""A served day with a partial bucket range, a holdout, forced users and a known effect.

Runs the day's story as the flows call it, without Prefect, on the tiny world.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from common.typedconf import ConfigError
from components import reports, samples, training
from components.ab import HOLDOUT, NO_EXPERIMENT, UNENROLLED
from components.features.store import build_features
from components.experiment import load_experiment
from components.serving import ArmConfig
from flows.campaign import prepare_campaign
from sim.config import load_scenario
from sim.effects import EffectConfig
from story import models
from story.campaign import create_campaign
from story.day import run_day
from story.plan import BOOTSTRAP_EXPERIMENT
from story.world import publish_catalog

FORCED = [3, 5, 8]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    arms = {"control": ArmConfig(channels={"popular": 20}, share=50.0),        # no ranker to train: fast
            "treatment": ArmConfig(channels={"popular": 10, "itemcf": 20}, share=50.0)}
    exp = replace(load_experiment("default"), arms=arms, buckets=(0, 8000), holdout=20.0,
                  forced={"treatment": FORCED})
    world = replace(load_scenario("tiny"), effect=EffectConfig(arm="treatment", logit=1.0))
    c = create_campaign(tmp_path_factory.mktemp("traffic"), "t", world, exp, None)
    for day in (0, 1):
        publish_catalog(c, day)
        build_features(c.lake, day)
        if day == 0:
            models.train_bootstrap(c)
        run_day(c, day)
        if day == 0:
            samples.build_samples(c.lake, day)
            training.train_channels(c.lake, day, exp, c.models_dir(day))
            training.train_rankers(c.lake, day, exp, c.models_dir(day))
    c.lake.refresh_catalog()
    return c


def test_requests_record_who_is_in_the_experiment(campaign):
    req = campaign.lake.read("requests", 1).to_pandas()
    exp = campaign.experiment
    assert set(req["layer"]) == {exp.layer}
    by_arm = req.groupby("arm")["user_id"].nunique() / req["user_id"].nunique()
    assert set(by_arm.index) == {"control", "treatment", HOLDOUT, UNENROLLED}
    assert by_arm[HOLDOUT] == pytest.approx(0.20, abs=0.06)
    assert set(req.loc[req["arm"].isin([HOLDOUT, UNENROLLED]), "experiment"]) == {NO_EXPERIMENT}
    assert set(req.loc[req["arm"].isin(["control", "treatment"]), "experiment"]) == {exp.name}
    forced = req[req["user_id"].isin(FORCED)]
    assert len(forced) and set(forced["arm"]) == {"treatment"}
    assert set(campaign.lake.read("requests", 0).to_pandas()["layer"]) == {BOOTSTRAP_EXPERIMENT}


def test_report_leaves_out_forced_and_unenrolled_users(campaign):
    exp = campaign.experiment
    t = reports.ab_daily(campaign.lake, 1, exp.name, {n: a.share for n, a in exp.arms.items()}, exp.control,
                         layer=exp.layer, exclude_users=exp.forced_users(), covariate_day=0).to_pandas()
    req = campaign.lake.read("requests", 1).to_pandas()
    enrolled = req[(req["experiment"] == exp.name) & ~req["user_id"].isin(FORCED)]
    assert t["users"].sum() == enrolled["user_id"].nunique()
    treat = t[~t["is_control"]].iloc[0]
    # logit +1 on every click of treatment's users: far beyond what the pipelines' difference makes
    assert treat["cum_lift"] > 0.3 and treat["cum_p_value"] < 1e-3
    assert treat["cuped_ctr"] > 0 and np.isfinite(treat["cuped_variance_reduction"])


def test_world_daily_keeps_the_truth_per_arm(campaign):
    w = campaign.lake.read("world_daily", 1).to_pandas().set_index("arm")
    assert w.loc["treatment", "ctr_expected"] > 1.5 * w.loc["control", "ctr_expected"]


def test_an_effect_on_an_unknown_arm_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "world.yaml"
    path.write_text("name: w\nusers: {n: 50}\nitems: {n: 40, n_categories: 4}\neffect: {arm: treatmnt, logit: 0.2}\n")
    with pytest.raises(ConfigError, match="scenario.effect.arm: unknown arm 'treatmnt'"):
        prepare_campaign.fn(str(tmp_path / "data"), str(path), "default", None, None)
