"""Are the A/B statistics right? Many short experiments on the simulator, with a known truth.

Each experiment draws its own traffic and clicks from a small world served by a fixed policy
(slates of uniformly random items), so the only difference between arms is the one the world is told to
make (`sim.effects`). Day 0 is the bootstrap day, whose behaviour is CUPED's covariate; users are
assigned by the real splitter with a salt per experiment and analysed by the real statistics.

    python -m bench.ab_validation            # A/A, peeking, power and SRM studies; appends RESULTS.md
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import stats

from components.ab import Allocation, AnalysisConfig, Assigner, UserData, always_valid_lift, look, power
from sim import behavior, effects
from sim.config import load_scenario
from sim.rng import stream
from sim.state import initial_state
from sim.traffic import traffic
from sim.world import World, make_world

SLATE = 10
LAYER = "validation"


@lru_cache(maxsize=4)
def validation_world(users: int = 2000, seed: int = 3) -> World:
    """The `tiny` scenario's world with more users: delta-method normality needs a few hundred per arm."""
    config = load_scenario("tiny")
    return make_world(replace(config, seed=seed, users=replace(config.users, n=users)))


@dataclass(frozen=True)
class Experiment:
    looks: list[dict[str, dict]]   # cumulative analysis after each day 1..D (see components.ab.look)
    true_diff: float               # the CTR difference the effect makes, from the world's probabilities
    always_valid: dict[str, float]  # always-valid p and lift interval of the treatment after the last day


def day_of(world: World, day: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Requests' users [R] and their click probabilities [R, K] under random slates."""
    state = initial_state(world)   # a fixed world: the checks are about the statistics
    tr = traffic(world, state, day, stream(seed, day, "traffic"))
    slates = stream(seed, day, "slates").integers(0, world.n_items, (len(tr.user_id), SLATE))  # [R, K]
    return tr.user_id, behavior.click_probability(world, state, tr.user_id, slates)


def per_user(users: np.ndarray, prob: np.ndarray, clicks: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and impressions summed per user: [U] each."""
    return (np.bincount(users, clicks.sum(axis=1), n_users),
            np.bincount(users, np.full(len(users), prob.shape[1], float), n_users))


def run_experiment(world: World, index: int, days: int = 1, logit: float = 0.0,
                   served: dict[str, float] | None = None, config: AnalysisConfig = AnalysisConfig()) -> Experiment:
    """One experiment (control vs treatment, 50/50 as configured) with salt and seeds of its own.

    `logit`: the world favours treatment's users by this much. `served`: the shares actually used
    for assignment, to inject an assignment bug that the analysis (told 50/50) must notice.
    """
    configured = {"control": 50.0, "treatment": 50.0}
    name = f"validation-{index}"
    assigner = Assigner([Allocation(name, LAYER, served or configured)])
    arm = assigner.assign(np.arange(world.n_users), LAYER).arm                      # [U]
    seed = 1_000_003 * (index + 1)
    users, prob = day_of(world, 0, seed)
    pre_c, pre_n = per_user(users, prob, stream(seed, 0, "clicks").random(prob.shape) < prob, world.n_users)
    clicks, imps = np.zeros(world.n_users), np.zeros(world.n_users)
    seen = np.zeros(world.n_users, bool)
    looks, truth_num, truth_den = [], 0.0, 0.0
    for day in range(1, days + 1):
        users, prob = day_of(world, day, seed)
        boosted = effects.favour(prob, arm[users] == "treatment", logit)            # [R, K]
        clicked = stream(seed, day, "clicks").random(prob.shape) < boosted
        c, n = per_user(users, prob, clicked, world.n_users)
        clicks, imps, seen = clicks + c, imps + n, seen | (n > 0)
        # The average effect of treatment on CTR over this traffic: everyone boosted vs no one.
        truth_num += float(effects.favour(prob, np.ones(len(users), bool), logit).sum() - prob.sum())
        truth_den += prob.size
        data = {a: UserData(clicks[seen & (arm == a)], imps[seen & (arm == a)], pre_c[seen & (arm == a)],
                            pre_n[seen & (arm == a)]) for a in configured}
        looks.append(look(data, configured, "control"))
    return Experiment(looks, truth_num / truth_den, always_valid_lift(looks, "treatment", config))


def aa_study(n: int, days: int, world: World) -> dict[str, float]:
    """False positives at alpha 0.05 of the final look, with and without CUPED, and under daily peeking."""
    runs = [run_experiment(world, i, days) for i in range(n)]
    p = np.array([r.looks[-1]["treatment"]["p_value"] for r in runs])
    p_cuped = np.array([r.looks[-1]["treatment"]["cuped_p_value"] for r in runs])
    peek = np.array([min(lk["treatment"]["p_value"] for lk in r.looks) for r in runs])
    av = np.array([r.always_valid["av_min_p_value"] for r in runs])      # rejected at any look
    reduction = np.array([r.looks[-1]["treatment"]["cuped_variance_reduction"] for r in runs])
    srm = np.array([r.looks[-1]["treatment"]["srm_p"] for r in runs])
    se = np.array([r.looks[-1]["treatment"]["diff_ci_high"] - r.looks[-1]["treatment"]["diff"] for r in runs])
    return {"experiments": n, "days": days, "fp_share": float(np.mean(p < 0.05)),
            "ks_p": float(stats.kstest(p, "uniform").pvalue),
            "fp_share_cuped": float(np.mean(p_cuped < 0.05)),
            "ks_p_cuped": float(stats.kstest(p_cuped, "uniform").pvalue),
            "fp_share_peeking": float(np.mean(peek < 0.05)), "fp_share_always_valid": float(np.mean(av < 0.05)),
            "cuped_variance_reduction": float(np.median(reduction)), "srm_flagged": float(np.mean(srm < 0.001)),
            "se_diff": float(np.median(se) / stats.norm.ppf(0.975))}


def power_study(n: int, days: int, logit: float, world: World, se_planned: float) -> dict[str, float]:
    """Detection rate of a known effect against the standard formula's power.

    The formula takes the effect (the world's true CTR difference) and the standard error planned
    from A/A experiments of the same length, as one plans a test from past data.
    """
    runs = [run_experiment(world, 100_000 + i, days, logit) for i in range(n)]
    p = np.array([r.looks[-1]["treatment"]["p_value"] for r in runs])
    diff = float(np.mean([r.true_diff for r in runs]))
    predicted = power(diff, se_planned)
    measured = float(np.mean(p < 0.05))
    return {"experiments": n, "logit": logit, "true_diff": diff, "predicted_power": predicted,
            "measured_power": measured, "sampling_sd": float(np.sqrt(predicted * (1 - predicted) / n))}


def srm_study(users: int = 20_000) -> dict[str, float]:
    """SRM p of a correct 50/50 assignment and of an injected 52/48 bug, on a larger world."""
    world = validation_world(users)
    fair = run_experiment(world, 7, 1).looks[-1]["treatment"]["srm_p"]
    buggy = run_experiment(world, 7, 1, served={"control": 52.0, "treatment": 48.0}).looks[-1]["treatment"]["srm_p"]
    return {"users": users, "srm_p_fair": float(fair), "srm_p_52_48": float(buggy)}


def main() -> None:
    from bench.results import append

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa", type=int, default=1000, help="A/A experiments")
    parser.add_argument("--peek-days", type=int, default=5)
    parser.add_argument("--power", type=int, default=400, help="experiments with a known effect")
    parser.add_argument("--logit", type=float, default=0.1)
    args = parser.parse_args()
    world = validation_world()
    aa = aa_study(args.aa, 1, world)
    peek = aa_study(args.aa // 4, args.peek_days, world)
    pw = power_study(args.power, 1, args.logit, world, aa["se_diff"])
    srm = srm_study()
    for name, res in (("A/A, 1 day", aa), (f"A/A, {args.peek_days} daily looks", peek), ("power", pw), ("SRM", srm)):
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()})
    rows = [["A/A 1 day: significant share (alpha 0.05)", f"{aa['fp_share']:.3f} of {args.aa}"],
            ["A/A 1 day: KS p-value of p-values vs uniform", f"{aa['ks_p']:.3f}"],
            ["A/A 1 day, CUPED: significant share", f"{aa['fp_share_cuped']:.3f}"],
            ["A/A 1 day, CUPED: KS p-value", f"{aa['ks_p_cuped']:.3f}"],
            ["CUPED variance reduction (median)", f"{aa['cuped_variance_reduction']:.1%}"],
            [f"A/A {args.peek_days} looks: any look p < 0.05 (peeking)",
             f"{peek['fp_share_peeking']:.3f} of {peek['experiments']}"],
            [f"A/A {args.peek_days} looks: always-valid p < 0.05", f"{peek['fp_share_always_valid']:.3f}"],
            [f"known effect (logit +{args.logit}): predicted power", f"{pw['predicted_power']:.3f}"],
            ["known effect: measured detection rate",
             f"{pw['measured_power']:.3f} of {args.power} (sd {pw['sampling_sd']:.3f})"],
            ["SRM p, fair 50/50 (20,000 users)", f"{srm['srm_p_fair']:.3g}"],
            ["SRM p, injected 52/48 bug", f"{srm['srm_p_52_48']:.3g}"]]
    append("A/B statistics validated on the simulator (tiny world, 2,000 users, random slates)",
           ["check", "result"], rows, notes="each experiment: own salt, traffic and clicks; day 0 is CUPED's covariate")


if __name__ == "__main__":
    main()
