"""bench/fidelity.py end to end on a tiny log: calibrate, simulate three exposures, score both sides."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import fidelity
from sim import fit
from tests.sim.test_fit import toy_log


def test_fidelity_bench_end_to_end_on_a_tiny_file(tmp_path, capsys):
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    out = tmp_path / "fidelity.json"
    rc = fidelity.main(["--data", str(data), "--algorithms", "popular,itemcf", "--days", "4",
                        "--search-users", "150", "--search-evals", "3", "--workdir", str(tmp_path / "work"),
                        "--out", str(out), "--no-results"])
    assert rc == 0
    result = json.loads(out.read_text())["tiny"]
    for alg in ("popular", "itemcf"):
        for side in ("real", "sim"):
            assert set(result[alg][side]) == {"recall@10", "ndcg@10"}
            assert 0 <= result[alg][side]["recall@10"] <= 1
    assert "kendall_tau" in result and len(result["calibration"]["evaluations"]) == 3
    # The polish starts at the search's point and keeps the best point it tried.
    cal = result["calibration"]
    assert cal["polish"][0]["popularity"] == pytest.approx(cal["search_knobs"]["popularity"])
    assert cal["polish_loss"] == min(t["loss"] for t in cal["polish"])
    assert cal["knobs"]["popularity"] == pytest.approx(min(cal["polish"], key=lambda t: t["loss"])["popularity"])
    for alg in ("popular", "itemcf"):
        lo, hi = result["sim_over_real_95"][alg]["sim"]
        ratio = result[alg]["sim"]["recall@10"] / result[alg]["real"]["recall@10"]
        assert lo <= round(ratio, 2) <= hi
    for policy in ("real", "organic"):
        assert result["structure"][policy]["users"] > 0
    # The simulated organic log is in the input's format and is the world's, not a copy of the file.
    _, sim, _ = fit.read_sequence_log(tmp_path / "work" / "tiny" / "sim-organic.txt")
    _, real, _ = fit.read_sequence_log(data)
    assert all(len(s) >= 5 for s in sim)
    assert sum(np.array_equal(a, b) for a, b in zip(sim, real)) < len(sim) // 4
    assert (tmp_path / "fidelity-tiny.png").is_file()


def test_replicas_average_simulated_logs_of_one_world(tmp_path, capsys):
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    common = ["--data", str(data), "--algorithms", "popular,itemcf", "--policies", "organic", "--search-users", "150",
              "--search-evals", "2", "--no-results"]
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    assert fidelity.main([*common, "--workdir", str(tmp_path / "w1"), "--out", str(one)]) == 0
    assert fidelity.main([*common, "--workdir", str(tmp_path / "w3"), "--out", str(three), "--replicas", "3",
                          "--calibration", str(one)]) == 0
    single, many = json.loads(one.read_text())["tiny"], json.loads(three.read_text())["tiny"]
    users = [sum(1 for _ in open(tmp_path / "w3" / "tiny" / name))
             for name in ("sim-organic.txt", "sim-organic-r1.txt", "sim-organic-r2.txt")]
    for alg in ("popular", "itemcf"):
        sim = many[alg]["sim"]
        # The first replica is the single run's log (same seed); the figure is the replicas' mean,
        # and its interval counts every replica's users.
        assert sim["replicas"][0] == single[alg]["sim"]
        assert sim["recall@10"] == pytest.approx(np.mean([r["recall@10"] for r in sim["replicas"]]), abs=1e-5)
        assert sim["users"] == sum(users)
        lo1, hi1 = single["sim_over_real_95"][alg]["sim"]
        lo3, hi3 = many["sim_over_real_95"][alg]["sim"]
        assert hi3 / lo3 < hi1 / lo1
    # Three different simulations, not one log read three times.
    texts = {(tmp_path / "w3" / "tiny" / n).read_text() for n in ("sim-organic.txt", "sim-organic-r1.txt", "sim-organic-r2.txt")}
    assert len(texts) == 3
    # A recalibrated world need not train on the real log again: its figures come from the first run.
    again = tmp_path / "again.json"
    assert fidelity.main([*common, "--workdir", str(tmp_path / "w3"), "--out", str(again), "--calibration", str(one),
                          "--real-from", str(one)]) == 0
    assert json.loads(again.read_text())["tiny"]["popular"]["real"] == single["popular"]["real"]
    with pytest.raises(SystemExit, match="has no real figure for sasrec") as exc:
        fidelity.main([*common, "--algorithms", "sasrec", "--calibration", str(one), "--real-from", str(one),
                       "--out", str(tmp_path / "y.json")])
    assert "\n" not in str(exc.value)
    assert fidelity.main([*common, "--out", str(tmp_path / "x.json"), "--replicas", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--replicas 0" in err


def test_fidelity_bench_refuses_a_malformed_file_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4\n2 5 oops\n")
    assert fidelity.main(["--data", str(bad), "--out", str(tmp_path / "f.json"), "--no-results"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.txt:2" in err


def test_knob_overrides_are_typed_and_a_bad_one_is_one_line():
    from bench.fidelity import knob_overrides
    assert knob_overrides(["dim=64", "floor=1e-4", "memory=8"]) == {"dim": 64, "floor": 1e-4, "memory": 8}
    for bad, says in ((["nope=1"], "name one of"), (["dim=x"], "is not a int"), (["dim"], "name=value")):
        with pytest.raises(SystemExit, match=says) as exc:
            knob_overrides(bad)
        assert "\n" not in str(exc.value)


def test_the_sweep_scores_candidate_worlds_against_the_calibrated_one(tmp_path, capsys):
    from bench import fidelity_sweep
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    base = tmp_path / "fidelity.json"
    assert fidelity.main(["--data", str(data), "--algorithms", "popular,itemcf", "--policies", "organic",
                          "--search-users", "150", "--search-evals", "2", "--workdir", str(tmp_path / "work"),
                          "--out", str(base), "--no-results"]) == 0
    out = tmp_path / "variants.json"
    common = ["--data", str(data), "--base", str(base), "--algorithms", "popular,itemcf", "--out", str(out),
              "--workdir", str(tmp_path / "sweep"), "--no-results", "--processes", "1"]
    assert fidelity_sweep.main([*common, "--variant", '{"space": "next", "backward": 0}',
                                "--variant", '{"smooth": 0.0}']) == 0
    entry = json.loads(out.read_text())["tiny"]
    assert set(entry["real"]) == {"popular", "itemcf"}
    rows = entry["runs"][0]["variants"]
    assert [r["variant"] for r in rows] == [{"space": "next", "backward": 0}, {"smooth": 0.0}]
    assert rows[0]["knobs"]["space"] == "next" and rows[1]["knobs"]["smooth"] == 0.0
    for r in rows:
        assert 0 <= r["sim"]["itemcf"]["recall@10"] <= 1
        assert 0 <= r["structure"]["last_forward_only"] + r["structure"]["last_backward_only"] <= 1
    # A walk round a ring is directed: its next item follows the last, it does not precede it.
    assert entry["real_structure"]["last_forward_only"] > entry["real_structure"]["last_backward_only"]
    assert fidelity_sweep.main([*common, "--variant", '{"bogus": 1}']) == 2
    assert "bogus" in capsys.readouterr().err


def test_runs_of_one_calibration_on_two_machines_combine_and_other_knobs_are_refused(tmp_path, capsys):
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    common = ["--data", str(data), "--workdir", str(tmp_path / "work"), "--no-results", "--days", "3"]
    assert fidelity.main([*common, "--algorithms", "popular,itemcf", "--policies", "organic", "--search-users",
                          "150", "--search-evals", "2", "--out", str(first)]) == 0
    # The same calibration, another exposure and one algorithm, written elsewhere (another machine).
    assert fidelity.main([*common, "--calibration", str(first), "--algorithms", "itemcf", "--policies", "uniform",
                          "--out", str(second)]) == 0
    # Nothing run here: the two files' figures, one entry, one table.
    assert fidelity.main([*common, "--calibration", str(first), "--algorithms", "", "--policies", "",
                          "--merge-from", str(first), "--merge-from", str(second), "--out", str(first)]) == 0
    both = json.loads(first.read_text())["tiny"]
    b = json.loads(second.read_text())["tiny"]
    assert set(both["itemcf"]) == {"real", "sim", "sim_uniform"} and set(both["popular"]) == {"real", "sim"}
    assert both["itemcf"]["sim_uniform"] == b["itemcf"]["sim_uniform"]
    assert set(both["structure"]) == {"real", "organic", "uniform"} and len(both["runs"]) == 2
    assert "kendall_tau" in both and "kendall_tau_uniform" not in both   # popular never ran on uniform
    # Where two files hold the same figure, the later one named stands.
    doctored = json.loads(second.read_text())
    doctored["tiny"]["itemcf"]["sim"] = {"recall@10": 0.123, "ndcg@10": 0.05}
    later = tmp_path / "later.json"
    later.write_text(json.dumps(doctored))
    combined = tmp_path / "combined.json"
    for order, expect in (([first, later], 0.123), ([later, first], both["itemcf"]["sim"]["recall@10"])):
        assert fidelity.main([*common, "--calibration", str(first), "--algorithms", "", "--policies", "", "--out",
                              str(combined), *[x for f in order for x in ("--merge-from", str(f))]]) == 0
        assert json.loads(combined.read_text())["tiny"]["itemcf"]["sim"]["recall@10"] == expect
    other = ["--calibration", str(first), "--knob", "smooth=0.9", "--algorithms", "", "--policies", ""]
    with pytest.raises(SystemExit, match="other knobs") as exc:
        fidelity.main([*common, *other, "--merge-from", str(second), "--out", str(tmp_path / "c.json")])
    assert "\n" not in str(exc.value)


def test_an_earlier_window_keeps_each_users_first_events_and_refuses_a_bad_share(tmp_path, capsys):
    from bench import log_window
    data = toy_log(tmp_path / "tiny.txt", users=150, items=40)
    out = tmp_path / "early.txt"
    assert log_window.main(["--data", str(data), "--share", "0.7", "--out", str(out)]) == 0
    _, full, _ = fit.read_sequence_log(data)
    _, early, _ = fit.read_sequence_log(out)
    assert 0 < len(early) <= len(full) and all(len(s) >= 5 for s in early)
    assert sum(map(len, early)) < 0.75 * sum(map(len, full))
    assert log_window.main(["--data", str(data), "--share", "1.5", "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_ratio_interval_covers_the_true_ratio_about_95_times_in_100():
    # Two logs whose R@10 are shares of users: 0.016 over 8,600 users and 0.020 over 8,000.
    rng = np.random.default_rng(0)
    n_real, n_sim, p_real, p_sim = 8600, 8000, 0.016, 0.020
    real = rng.binomial(n_real, p_real, 4000) / n_real
    sim = rng.binomial(n_sim, p_sim, 4000) / n_sim
    bounds = np.array([fidelity.ratio_interval(s, n_sim, r, n_real) for s, r in zip(sim, real)])
    covered = (bounds[:, 0] <= p_sim / p_real) & (p_sim / p_real <= bounds[:, 1])
    assert 0.93 <= covered.mean() <= 0.97
    # More users, a narrower interval; a figure of 0 leaves the ratio unbounded.
    narrow = fidelity.ratio_interval(0.02, 80000, 0.016, 86000)
    assert narrow[1] - narrow[0] < (bounds[:, 1] - bounds[:, 0]).mean() / 3
    assert all(np.isnan(fidelity.ratio_interval(0.0, 100, 0.1, 100)))
