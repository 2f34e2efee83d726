"""sim/fit.py and sim/structure.py: a world fitted to any sequential log, and the log's structure."""
from __future__ import annotations

import numpy as np
import pytest

from sim import fit
from sim.structure import k_core, structure
from sim.world import make_world


def toy_log(path, users: int = 120, items: int = 40, seed: int = 0):
    """Users walk a ring of items (i -> i+1 mostly): a log with strong sequential structure."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(users):
        start, n = int(rng.integers(items)), int(rng.integers(5, 12))
        seq = [(start + t + int(rng.random() < 0.2) * int(rng.integers(items))) % items for t in range(n)]
        lines.append(" ".join(str(x) for x in [u + 1, *[i + 1 for i in seq]]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_logs_are_refused_with_one_line(tmp_path):
    for text, where in (("1 2 x\n", "bad.txt:1"), ("1 2 3\n\n7\n", "bad.txt:3"), ("", "no sequences")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(fit.LogFormatError, match=where) as exc:
            fit.read_sequence_log(tmp_path / "bad.txt")
        assert "\n" not in str(exc.value)
    with pytest.raises(fit.LogFormatError, match="cannot be read"):
        fit.read_sequence_log(tmp_path / "missing.txt")


def test_reading_makes_item_ids_dense_and_keeps_order(tmp_path):
    (tmp_path / "log.txt").write_text("4 10 30 10\n9 30 20\n")
    users, seqs, n = fit.read_sequence_log(tmp_path / "log.txt")
    np.testing.assert_array_equal(users, [4, 9])
    np.testing.assert_array_equal(seqs[0], [0, 2, 0])
    np.testing.assert_array_equal(seqs[1], [2, 1])
    assert n == 3


def test_structure_of_a_ring_walk_is_sequential_and_k_core_filters(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    st = structure(seqs, n)
    assert st["last_in_top10_cooc"] > 0.5 > st["last_in_top10_popular"]
    assert 0 <= st["gini"] < 1 and st["users"] == len(seqs)
    # On a ring the item before the held-out one points at it; items further back point elsewhere.
    assert st["lag3_in_top50_cooc"] < st["last_in_top50_cooc"]
    assert 0 <= st["last_in_top10_taste64"] <= 1
    core = k_core([np.array([0, 1, 2, 3, 4]), np.array([0, 1, 2, 3, 9])], k=2)
    assert [list(s) for s in core] == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_a_fitted_world_loads_from_its_arrays_and_refuses_other_sizes(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    knobs = fit.Knobs(smooth=0.3)
    arrays = fit.fit_arrays(seqs, n, knobs, n_categories=4, dim=4)
    assert arrays["user_taste"].shape == (len(seqs), 4) and arrays["item_latent"].shape == (n, 4)
    np.savez(tmp_path / "w.npz", **arrays)
    cfg = fit.fitted_scenario(arrays, knobs, str(tmp_path / "w.npz"), n_categories=4)
    world = make_world(cfg, 0)
    assert world.n_users == len(seqs) and world.n_items == n
    rows = np.bincount(np.repeat(np.arange(n), np.diff(world.item_next.indptr)), weights=world.item_next.weights,
                       minlength=n)
    np.testing.assert_allclose(rows[rows > 0], 1.0, rtol=1e-5)
    # The fitted kernel carries the ring: item i mostly leads on to i + 1.
    nxt = [world.item_next.indices[world.item_next.indptr[i] + np.argmax(
        world.item_next.weights[world.item_next.indptr[i]:world.item_next.indptr[i + 1]])] for i in range(n)]
    assert np.mean([(b - a) % n in (1, n - 1) for a, b in enumerate(nxt)]) > 0.5
    import dataclasses
    wrong = dataclasses.replace(cfg, users=dataclasses.replace(cfg.users, n=len(seqs) + 1))
    with pytest.raises(ValueError, match="refit it"):
        make_world(wrong, 0)


def test_the_search_improves_on_its_first_point(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt", users=150))
    res = fit.search(seqs, n, tmp_path / "search", users=150, evaluations=14, log=lambda *a, **k: None)
    assert len(res.evaluations) == 14
    assert res.loss == min(e["loss"] for e in res.evaluations) <= res.evaluations[0]["loss"]


def test_item_similarity_of_a_ring_walk_points_at_the_next_item(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    st = structure(seqs, n)
    # Items taken by the same users sit next to each other on the ring, so the item nearest the
    # one before the held-out event is often the held-out one; popularity knows nothing of it.
    assert st["last_in_top10_near64"] > 2 * st["last_in_top10_popular"]
    assert 0 <= st["last_in_top50_near64"] <= 1


def test_the_latent_kernel_leads_to_the_items_nearest_in_taste(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    knobs = fit.Knobs(smooth=1.0, space="latent", neighbours=3, dim=4)
    arrays = fit.fit_arrays(seqs, n, knobs, n_categories=4)
    latent = arrays["item_latent"] / np.linalg.norm(arrays["item_latent"], axis=1, keepdims=True)
    sim = latent @ latent.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1)[:, :3]
    live = arrays["edge_weight"] > 0          # all of the mass on the low-rank kernel: counted pairs weigh 0
    src, dst = arrays["edge_src"][live], arrays["edge_dst"][live]
    assert len(src) == 3 * n
    assert all(set(dst[src == i]) == set(nearest[i]) for i in range(n))
    cfg = fit.fitted_scenario(arrays, knobs, str(tmp_path / "w.npz"), n_categories=4)
    assert cfg.fit.space == "latent"
    import dataclasses
    from common.typedconf import ConfigError
    with pytest.raises((ConfigError, ValueError), match="space"):
        dataclasses.replace(cfg.fit, space="bogus").validate("fit")


def test_the_next_kernel_follows_the_logs_direction_to_items_like_the_next_one():
    # 0 -> 1 in the log, never 1 -> 0; 2 sits next to 1 in taste, 3 far from both.
    latent = np.array([[1, 0, 0], [0, 1, 0], [0, 0.995, 0.0998], [0, 0, 1]], np.float32)
    e_src, e_dst, e_w = np.array([0]), np.array([1]), np.array([1.0])
    s_src, s_dst, s_w = fit._nearest(latent, latent, k=1, temperature=0.1)
    src, dst, w = fit._composed(e_src, e_dst, e_w, s_src, s_dst, s_w, n_items=4)
    edges = {(int(a), int(b)): float(x) for a, b, x in zip(src, dst, w)}
    assert edges[(0, 2)] == pytest.approx(1.0)       # 0 leads to what resembles its follower 1
    assert (1, 0) not in edges and (2, 0) not in edges     # the log's direction is kept
    assert edges[(1, 2)] == pytest.approx(1.0)        # 1 has no pair of its own: its neighbour row
    for a in set(src.tolist()):
        assert sum(x for (s, _), x in edges.items() if s == a) == pytest.approx(1.0)


def test_the_next_kernel_keeps_each_rows_strongest_targets(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    arrays = fit.fit_arrays(seqs, n, fit.Knobs(smooth=0.5, space="next", backward=0.0, neighbours=5, dim=4),
                            n_categories=4)
    src, w = arrays["edge_src"], arrays["edge_weight"]
    totals = np.bincount(src, weights=w, minlength=n)
    assert np.allclose(totals[np.bincount(src, minlength=n) > 0], 1.0, atol=1e-5)
    assert (arrays["edge_src"] != arrays["edge_dst"]).all()


def test_tail_popularity_sees_a_log_that_runs_in_time():
    # Items 0..39 are taken early by everyone, items 40..49 only at the end of sequences: in time
    # order, the late items predict the held-out event and all-time popularity does not.
    rng = np.random.default_rng(0)
    seqs = [np.array([*rng.choice(40, 6, replace=False), 40 + u % 10, 40 + (u + 1) % 10]) for u in range(200)]
    st = structure(seqs, 50)
    assert st["last_in_top10_tail_popular"] == 1.0
    assert st["last_in_top10_popular"] < 0.5
    # The same events with the late items moved to the front: no drift left to see.
    early = [np.array([s[-2], s[-1], *s[:-2]]) for s in seqs]
    assert structure(early, 50)["last_in_top10_tail_popular"] < 0.5
    # Item by item: the held-out items sit late in the held-in sequences; with time shuffled
    # out of every sequence, nowhere in particular.
    assert st["last_lateness"] > 0.3
    assert abs(structure([rng.permutation(s) for s in seqs], 50)["last_lateness"]) < 0.1


def test_lateness_shrinks_the_few_positions_of_rare_items():
    from sim.structure import lateness
    rng = np.random.default_rng(1)
    # Items 0..9 taken early and 10..19 late by every user; item 20 once, last, by one user.
    seqs = [np.array([*rng.permutation(10), *(10 + rng.permutation(10))]) for _ in range(100)]
    seqs.append(np.array([0, 20]))
    raw, seen = lateness(seqs, 22, shrink=False)
    late, _ = lateness(seqs, 22)
    assert seen[:21].all() and not seen[21] and late[21] == 0.0
    assert raw[20] == 0.5 and 0 < late[20] < 0.5 * raw[20]          # one position says little
    assert np.all(late[:10] < -0.15) and np.all(late[10:20] > 0.15)   # a hundred say a lot
    np.testing.assert_allclose(late[:20], raw[:20], atol=0.02)


def test_direction_tells_a_one_way_walk_from_a_two_way_one(tmp_path):
    _, seqs, n = fit.read_sequence_log(toy_log(tmp_path / "ring.txt"))
    one_way = structure(seqs, n)
    assert one_way["last_forward_only"] > 3 * one_way["last_backward_only"]
    both = structure([s if u % 2 else s[::-1].copy() for u, s in enumerate(seqs)], n)
    # Walked both ways, most pairs are seen in both orders: neither order alone tells the next step.
    assert both["last_forward_only"] < one_way["last_forward_only"] / 2


def test_the_lifecycle_stage_finds_the_time_a_log_runs_in(tmp_path):
    # Every user takes catalogue items 0..29 early and 30..59 late: a log that runs in time. With
    # each sequence shuffled the same events carry no time, and the stage finds less of it.
    rng = np.random.default_rng(0)
    timed = [np.array([*rng.choice(30, 4, replace=False), *(30 + rng.choice(30, 4, replace=False))])
             for _ in range(300)]
    found = {}
    for name, seqs in (("timed", timed), ("shuffled", [rng.permutation(s) for s in timed])):
        res = fit.search(seqs, 60, tmp_path / name, users=300, evaluations=6, lifecycle_evals=6,
                         log=lambda *a, **k: None)
        assert len(res.evaluations) == 6
        found[name] = res.knobs.lifecycle
    assert found["timed"] > 3.0
    assert found["shuffled"] < found["timed"] / 2
