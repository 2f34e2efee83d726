"""Are the A/B statistics right on the loop itself? Many short experiments through the real parts.

`bench.ab_validation` checks the statistics on a stand-in process (independent clicks on random
slates). Here every experiment goes through what a campaign's A/B day goes through: a `tiny`
campaign's day 0 is served by the logging policy and trained on (samples, channels, rankers), then
each experiment is day 1 again, with its own seed:

- traffic drawn from the world's day-1 state with the experiment's seed (`sim.traffic`), request
  ids offset per experiment so the world's keyed click draws are the experiment's own;
- users assigned by the real splitter (`components.ab.Assigner`) under the experiment's salt;
- served by `story.serve.serve_rows`: time-ordered micro-batches, the feature store and stream,
  the pipelines built from the campaign's day-0 models, and the world's own answer
  (`sim.behavior.respond`: one multinomial choice per request, the scenario's effect included);
- analysed by `components.ab.look` per user (delta-method CTR, CUPED on the day-0 clicks and
  impressions, SRM), as `ab_daily` is.

Both arms serve control's pipeline, so they differ only by what is injected: nothing (A/A); the
scenario's own known effect (`effect: {arm: treatment, logit: L}`), whose true lift is computed
from the world's probabilities without and with it; or an assignment bug (the splitter serves
55/45 or 60/40, the analysis is told 50/50). Serving cannot change who arrives, so the SRM
experiments stop after the plan (traffic and splitter). Writes bench/ab_loop.json and a RESULTS
section.

    python -m bench.ab_loop [--aa 500] [--effect 300] [--logit 0.2] [--srm 200]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

from components import samples, training
from components.ab import Allocation, AnalysisConfig, Assigner, UserData, look, power, srm_pvalue
from components.experiment import load_experiment
from components.features.store import build_features
from sim import behavior, effects
from sim.config import load_scenario
from sim.effects import EffectConfig
from sim.rng import stream
from sim.traffic import Traffic, traffic
from story import models
from story.campaign import Campaign, create_campaign
from story.day import run_day
from story.plan import DayPlan
from story.serve import serve_rows
from story.world import publish_catalog, state_of, world_of

HERE = Path(__file__).resolve().parent
OUT = HERE / "ab_loop.json"
DAY = 1
FAIR = {"control": 50.0, "treatment": 50.0}
# Far above any day's request count, so experiments' request ids (and their click draws) never meet.
ID_STRIDE = 1 << 32


def loop_campaign(data_dir: Path, scenario: str = "tiny", experiment: str = "default") -> Campaign:
    """A campaign whose day 0 is served, logged and trained on, and whose day 1 can be served."""
    c = create_campaign(data_dir, "ab-loop", load_scenario(scenario), load_experiment(experiment), None)
    publish_catalog(c, 0)
    build_features(c.lake, 0)
    models.train_bootstrap(c)
    run_day(c, 0)
    samples.build_samples(c.lake, 0)
    out = c.models_dir(0)
    out.mkdir(parents=True, exist_ok=True)
    training.train_channels(c.lake, 0, c.experiment, out)
    training.train_rankers(c.lake, 0, c.experiment, out)
    publish_catalog(c, DAY)
    build_features(c.lake, DAY)
    return c


@dataclass(frozen=True)
class Result:
    look: dict[str, dict]      # components.ab.look of the day: arm -> statistics
    true_lift: float           # the relative CTR lift the injected effect makes on this traffic
    users: int                 # users with a request


class Loop:
    """The experiments of one campaign: its day-1 world, control's pipeline, the day-0 covariate."""

    def __init__(self, c: Campaign):
        self.c = c
        exp = c.experiment
        self.control = exp.arms[exp.control]
        self.pipelines = models.pipelines_from_folder(c, DAY, {exp.control: self.control})
        day0 = c.lake.read("impressions", 0).select(["user_id", "clicked"]).to_pandas()
        n = world_of(c, DAY).n_users
        self.pre_clicks = np.bincount(day0.user_id, day0.clicked.astype(float), n)      # [U]
        self.pre_imps = np.bincount(day0.user_id, minlength=n).astype(float)           # [U]

    def plan(self, index: int, served: dict[str, float] = FAIR) -> DayPlan:
        """Experiment `index`'s day: its traffic, and its users split by its salt in `served` shares."""
        c, seed = self.c, 1_000_003 * (index + 1)
        tr = traffic(world_of(c, DAY), state_of(c, DAY), DAY, stream(seed, DAY, "traffic"))
        tr = Traffic(DAY, tr.request_id + ID_STRIDE * (index + 1), tr.user_id, tr.ts)
        name = f"ab-loop-{index}"
        arm = Assigner([Allocation(name, "ab-loop", served)]).assign(tr.user_id, "ab-loop").arm
        return DayPlan(tr, name, "ab-loop", {a: self.control for a in FAIR}, "control",
                       np.asarray(arm, dtype=object), np.full(len(arm), name, dtype=object))

    def run(self, index: int, logit: float = 0.0) -> Result:
        """Serve experiment `index` through the loop, the world favouring treatment by `logit`."""
        c = replace(self.c, scenario=replace(self.c.scenario, effect=EffectConfig("treatment" if logit else "", logit)))
        p = self.plan(index)
        pipelines = {a: self.pipelines[c.experiment.control] for a in FAIR}
        served = serve_rows(c, p, np.arange(len(p)), pipelines)
        users, shown = p.traffic.user_id, served.slates >= 0                             # [R], [R, K]
        n = len(self.pre_clicks)
        clicks = np.bincount(users, served.clicked.sum(axis=1), n)
        imps = np.bincount(users, shown.sum(axis=1), n)
        seen, arm = imps > 0, np.full(n, "", dtype=object)
        arm[users] = p.assigned
        data = {a: UserData(clicks[seen & (arm == a)], imps[seen & (arm == a)], self.pre_clicks[seen & (arm == a)],
                            self.pre_imps[seen & (arm == a)]) for a in FAIR}
        true_lift = 0.0
        if logit:
            # Everyone favoured against no one, on this traffic and these slates: the world's truth.
            raw = behavior.click_probability(world_of(c, DAY), state_of(c, DAY), users, np.maximum(served.slates, 0))
            raw = np.where(shown, raw, 0.0)
            true_lift = float(effects.favour(raw, np.ones(len(users), bool), logit).sum() / raw.sum() - 1)
        return Result(look(data, FAIR, "control"), true_lift, int(seen.sum()))

    def srm_p(self, index: int, served: dict[str, float]) -> tuple[float, int]:
        """SRM p of experiment `index` split in `served` shares, analysed as 50/50; and its users."""
        p = self.plan(index, served)
        users, first = np.unique(p.traffic.user_id, return_index=True)
        arm = p.assigned[first]
        return srm_pvalue({a: int((arm == a).sum()) for a in FAIR}, FAIR), len(users)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson interval of a binomial share k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p, d = k / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return mid - half, mid + half


def srm_predicted(users: float, share: float, alpha: float) -> float:
    """Chance the chi-squared test flags `users` split with `share` in control, told 50/50."""
    nc = users * 4 * (share - 0.5) ** 2
    return float(stats.ncx2.sf(stats.chi2.isf(alpha, 1), 1, nc))


def study(loop: Loop, aa: int, n_effect: int, logit: float, srm: int, log=print) -> dict:
    alpha, srm_alpha = AnalysisConfig().alpha, AnalysisConfig().srm_alpha
    t0 = time.perf_counter()
    runs = []
    for i in range(aa):
        runs.append(loop.run(i))
        if (i + 1) % 50 == 0:
            log(f"A/A {i + 1}/{aa}: {np.mean([r.look['treatment']['p_value'] < alpha for r in runs]):.3f} significant")
    aa_s = time.perf_counter() - t0
    t = [r.look["treatment"] for r in runs]
    p, p_cuped = np.array([x["p_value"] for x in t]), np.array([x["cuped_p_value"] for x in t])
    fp, fp_cuped = int((p < alpha).sum()), int((p_cuped < alpha).sum())
    se_lift = float(np.median([x["lift_se"] for x in t]))
    out = {"aa": {"experiments": aa, "significant": fp, "fp_rate": fp / aa, "fp_interval": wilson(fp, aa), "fp_target": [0.03, 0.07],
                  "ks_p": float(stats.kstest(p, "uniform").pvalue),
                  "significant_cuped": fp_cuped, "fp_rate_cuped": fp_cuped / aa,
                  "fp_interval_cuped": wilson(fp_cuped, aa), "ks_p_cuped": float(stats.kstest(p_cuped, "uniform").pvalue),
                  "cuped_variance_reduction": float(np.median([x["cuped_variance_reduction"] for x in t])),
                  "srm_flagged": int(sum(x["srm_p"] < srm_alpha for x in t)),
                  "lift_se_median": se_lift, "users_median": float(np.median([r.users for r in runs])),
                  "impressions_median": float(np.median([x["impressions"] + r.look["control"]["impressions"]
                                                         for x, r in zip(t, runs)])),
                  "ctr_median": float(np.median([r.look["control"]["ctr"] for r in runs])),
                  "seconds_per_experiment": aa_s / max(aa, 1)}}
    eff = []
    for i in range(n_effect):
        eff.append(loop.run(100_000 + i, logit))
        if (i + 1) % 50 == 0:
            log(f"effect {i + 1}/{n_effect}")
    true_lift = float(np.mean([r.true_lift for r in eff]))
    hits = int(sum(r.look["treatment"]["p_value"] < alpha for r in eff))
    # The lift's standard error grows with the lift (its variance scales with (1 + lift)^2), so the
    # plan from A/A's error and the formula at the error under the effect are both reported.
    se_effect = float(np.median([r.look["treatment"]["lift_se"] for r in eff])) if eff else float("nan")
    out["effect"] = {"experiments": n_effect, "logit": logit, "true_lift": true_lift,
                     "measured_lift_mean": float(np.mean([r.look["treatment"]["lift"] for r in eff])),
                     "predicted_power_aa_se": power(true_lift, se_lift, alpha), "lift_se_median": se_effect,
                     "predicted_power": power(true_lift, se_effect, alpha), "detected": hits,
                     "measured_power": hits / max(n_effect, 1), "measured_interval": wilson(hits, n_effect)}
    out["srm"] = {}
    for share in (55.0, 60.0):
        res = [loop.srm_p(200_000 + i, {"control": share, "treatment": 100 - share}) for i in range(srm)]
        flagged = int(sum(q < srm_alpha for q, _ in res))
        users = float(np.mean([u for _, u in res]))
        out["srm"][f"{share:.0f}/{100 - share:.0f}"] = {
            "experiments": srm, "users_mean": users, "flagged": flagged, "detection_rate": flagged / max(srm, 1),
            "interval": wilson(flagged, srm), "predicted": srm_predicted(users, share / 100, srm_alpha)}
    return out


def main() -> None:
    from bench.results import append, conditions, conditions_note

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aa", type=int, default=500, help="A/A experiments")
    p.add_argument("--effect", type=int, default=300, help="experiments with the known effect")
    p.add_argument("--logit", type=float, default=0.2, help="the known effect, on treatment's click log-odds")
    p.add_argument("--srm", type=int, default=200, help="experiments per injected assignment bug")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()
    load_before = os.getloadavg()
    start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="reclab-ab-loop-"))
    loop = Loop(loop_campaign(work / "campaign"))
    res = study(loop, args.aa, args.effect, args.logit, args.srm, log=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - start
    machine = conditions(load_before)
    OUT.write_text(json.dumps({**res, "seconds": round(seconds, 1), "scenario": "tiny", "experiment": "default",
                               **machine}, indent=2) + "\n")
    aa, eff = res["aa"], res["effect"]
    lo, hi = aa["fp_interval"]
    rows = [["A/A: p < 0.05", f"{aa['fp_rate']:.3f} ({aa['significant']} of {aa['experiments']}; 95 % "
             f"interval {lo:.3f} to {hi:.3f}; target {aa['fp_target'][0]:.2f} to {aa['fp_target'][1]:.2f}: "
             f"{'reached' if aa['fp_target'][0] <= aa['fp_rate'] <= aa['fp_target'][1] else 'NOT reached'})"],
            ["A/A: KS p-value of the p-values against uniform", f"{aa['ks_p']:.3f}"],
            ["A/A, CUPED: p < 0.05", f"{aa['fp_rate_cuped']:.3f} (interval {aa['fp_interval_cuped'][0]:.3f} to "
             f"{aa['fp_interval_cuped'][1]:.3f}); KS p {aa['ks_p_cuped']:.3f}"],
            ["CUPED variance reduction (median)", f"{aa['cuped_variance_reduction']:.1%}"],
            ["A/A: SRM flagged (p < 0.001)", f"{aa['srm_flagged']} of {aa['experiments']}"],
            [f"known effect (logit +{eff['logit']}): true lift", f"{eff['true_lift']:+.2%} (mean estimate "
             f"{eff['measured_lift_mean']:+.2%})"],
            ["known effect: predicted power at the lift's standard error under the effect",
             f"{eff['predicted_power']:.3f} (standard error {eff['lift_se_median']:.4f})"],
            ["known effect: predicted power planned from A/A's standard error",
             f"{eff['predicted_power_aa_se']:.3f} (standard error {aa['lift_se_median']:.4f})"],
            ["known effect: measured detection rate", f"{eff['measured_power']:.3f} ({eff['detected']} of "
             f"{eff['experiments']}; interval {eff['measured_interval'][0]:.3f} to {eff['measured_interval'][1]:.3f})"]]
    for split, s in res["srm"].items():
        rows.append([f"SRM: served {split}, analysed 50/50: flagged (p < 0.001)",
                     f"{s['detection_rate']:.3f} ({s['flagged']} of {s['experiments']}; interval {s['interval'][0]:.3f} to "
                     f"{s['interval'][1]:.3f}); predicted {s['predicted']:.3f} at {s['users_mean']:.0f} users"])
    append(f"A/B statistics through the loop (tiny campaign, day 1 served {aa['experiments']} times by day 0's models): "
           f"A/A false-positive rate {aa['fp_rate']:.3f}", ["check", "result"], rows, notes=(
               f"each experiment: its own traffic seed, splitter salt and click draws; served by story.serve.serve_rows "
               f"(control's pipeline in both arms) and answered by sim.behavior.respond; median {aa['users_median']:.0f} "
               f"users, {aa['impressions_median']:.0f} impressions, control CTR {aa['ctr_median']:.4f} per experiment; "
               f"predicted power: the z-test's formula at the true lift and a median standard error; "
               f"{aa['seconds_per_experiment']:.2f} s per served experiment, {seconds / 60:.1f} min in all; "
               f"{conditions_note(machine)}; bench/ab_loop.json"))
    print(json.dumps({k: res[k] for k in ("aa", "effect", "srm")}, indent=1))


if __name__ == "__main__":
    main()
