"""components/ab: layers, holdout, forced users; and the experiment settings that feed them."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from common.typedconf import ConfigError, from_mapping
from components.ab import (HOLDOUT, NO_EXPERIMENT, UNENROLLED, Allocation, Assigner, SplitError, Splitter)
from components.experiment import EXPERIMENT_DIR, ExperimentConfig, check_presets, load_experiment

USERS = np.arange(20_000, dtype=np.int64)
AB = {"control": 50, "treatment": 50}


def test_one_full_experiment_assigns_as_the_plain_splitter():
    # Existing campaigns keep their users' arms: a full-range experiment is its salted split.
    a = Assigner([Allocation("exp", "L", AB)]).assign(USERS, "L")
    np.testing.assert_array_equal(a.arm, Splitter("exp", AB).assign(USERS))
    assert set(a.experiment.tolist()) == {"exp"} and not a.forced.any()


def test_adding_an_arm_in_another_layer_leaves_this_layer_unchanged():
    ranking = Allocation("ranker-test", "ranking", AB)
    before = Assigner([ranking, Allocation("recall-test", "recall", AB)]).assign(USERS, "ranking")
    three = {"control": 34, "treatment": 33, "treatment-2": 33}
    after = Assigner([ranking, Allocation("recall-test", "recall", three)]).assign(USERS, "ranking")
    np.testing.assert_array_equal(before.arm, after.arm)
    np.testing.assert_array_equal(before.experiment, after.experiment)


def test_layers_are_orthogonal():
    plan = Assigner([Allocation("a", "recall", AB), Allocation("b", "ranking", AB)])
    x = plan.assign(USERS, "recall").arm == "treatment"
    y = plan.assign(USERS, "ranking").arm == "treatment"
    table = [[np.sum(x & y), np.sum(x & ~y)], [np.sum(~x & y), np.sum(~x & ~y)]]
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_experiments_in_one_layer_are_exclusive_and_get_their_range():
    plan = Assigner([Allocation("first", "L", AB, 0, 3000), Allocation("second", "L", AB, 3000, 10_000)])
    a = plan.assign(USERS, "L")
    share = np.mean(a.experiment == "first")
    assert abs(share - 0.3) < 4.5 * np.sqrt(0.3 * 0.7 / len(USERS))
    assert set(a.experiment.tolist()) == {"first", "second"}
    # within its range each experiment still splits 50/50, by its own salt
    inside = a.arm[a.experiment == "first"]
    assert stats.binomtest(int(np.sum(inside == "control")), len(inside), 0.5).pvalue > 0.001


def test_users_outside_every_range_are_unenrolled():
    a = Assigner([Allocation("half", "L", AB, 0, 5000)]).assign(USERS, "L")
    out = a.experiment == NO_EXPERIMENT
    assert abs(out.mean() - 0.5) < 0.02
    assert set(a.arm[out].tolist()) == {UNENROLLED}


def test_holdout_is_the_same_users_in_every_layer():
    plan = Assigner([Allocation("a", "recall", AB), Allocation("b", "ranking", AB)], holdout=10)
    r, k = plan.assign(USERS, "recall"), plan.assign(USERS, "ranking")
    held = r.arm == HOLDOUT
    np.testing.assert_array_equal(held, k.arm == HOLDOUT)
    assert abs(held.mean() - 0.10) < 4.5 * np.sqrt(0.09 / len(USERS))
    assert set(r.experiment[held].tolist()) == {NO_EXPERIMENT}


def test_forced_users_get_their_arm_even_in_the_holdout():
    held = Assigner([Allocation("e", "L", AB)], holdout=50)
    victim = int(USERS[held.held_out(USERS)][0])
    plan = Assigner([Allocation("e", "L", AB, forced={victim: "treatment", 5: "control"})], holdout=50)
    a = plan.assign(np.array([victim, 5, victim]), "L")
    assert a.arm.tolist() == ["treatment", "control", "treatment"]
    assert a.forced.all() and set(a.experiment.tolist()) == {"e"}


def test_assignment_is_sticky_across_batches_and_days():
    plan = Assigner([Allocation("e", "L", AB, 1000, 9000)], holdout=5)
    whole = plan.assign(USERS[:3000], "L").arm
    again = Assigner([Allocation("e", "L", AB, 1000, 9000)], holdout=5).assign(USERS[:3000][::-1], "L").arm
    np.testing.assert_array_equal(whole, again[::-1])


@pytest.mark.parametrize("allocations, holdout, fragment", [
    ([Allocation("a", "L", AB, 0, 6000), Allocation("b", "L", AB, 5000, 10_000)], 0, "overlaps"),
    ([Allocation("a", "L", {"x": 60, "y": 50})], 0, "sum to 100"),
    ([Allocation("a", "L", AB, 5000, 5000)], 0, "bucket range"),
    ([Allocation("a", "L", AB, forced={1: "nope"})], 0, "not exist"),
    ([Allocation("a", "L", AB), Allocation("a", "M", AB)], 0, "more than once"),
    ([Allocation("a", "L", AB, 0, 10, forced={1: "control"}),
      Allocation("b", "L", AB, 10, 20, forced={1: "control"})], 0, "forced into both"),
    ([Allocation("a", "L", AB)], 100, "holdout"),
])
def test_wrong_plans_are_refused(allocations, holdout, fragment):
    with pytest.raises(SplitError, match=fragment):
        Assigner(allocations, holdout)


def test_unknown_layer_is_named():
    with pytest.raises(SplitError, match="unknown layer 'ranking'"):
        Assigner([Allocation("a", "recall", AB)]).assign(USERS[:3], "ranking")


# ---- experiment settings -----------------------------------------------------------------------

BASE = {"name": "exp", "control": "control", "slate_size": 4,
        "arms": {"control": {"share": 50, "channels": {"popular": 10}},
                 "treatment": {"share": 50, "channels": {"popular": 5, "itemcf": 5}}}}


def experiment(**changes) -> ExperimentConfig:
    data = copy.deepcopy(BASE) | changes
    return from_mapping(ExperimentConfig, data)


def test_layer_settings_load_and_make_an_allocation():
    exp = experiment(layer="recall", buckets=[2000, 7000], holdout=5, forced={"treatment": [1, 2]})
    a = exp.allocation()
    assert (a.layer, a.start, a.end, a.salt) == ("recall", 2000, 7000, "exp")
    assert a.forced == {1: "treatment", 2: "treatment"}
    assert exp.forced_users() == [1, 2]


@pytest.mark.parametrize("changes, fragment", [
    ({"buckets": [5000, 4000]}, "config.buckets: must be"),
    ({"buckets": [0, 20_000]}, "config.buckets"),
    ({"holdout": 100}, "config.holdout"),
    ({"forced": {"treatmnt": [1]}}, "config.forced.treatmnt: unknown arm"),
    ({"forced": {"control": [1], "treatment": [1]}}, "forced into both"),
    ({"layer": " "}, "config.layer"),
    ({"analysis": {"alpha": 1.5}}, "config.analysis.alpha"),
    ({"analysis": {"method": "bayes"}}, "config.analysis.method"),
])
def test_wrong_layer_settings_are_refused(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        experiment(**changes)


def test_overlapping_experiments_in_one_layer_are_refused():
    a = experiment(name="a", layer="L", buckets=[0, 6000])
    b = experiment(name="b", layer="L", buckets=[5000, 10_000])
    with pytest.raises(ConfigError, match="layer 'L': experiment 'a' .* overlaps 'b'"):
        check_presets([a, b])
    check_presets([a, experiment(name="b", layer="M", buckets=[5000, 10_000])])


def test_the_presets_can_run_side_by_side():
    check_presets([load_experiment(p.stem) for p in sorted(EXPERIMENT_DIR.glob("*.yaml"))])
