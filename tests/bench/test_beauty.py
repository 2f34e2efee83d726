"""bench/beauty.py: the leave-one-out split, full-ranking metrics and the top-10 file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import beauty


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 1 2 3 4 5\n2 3 4 5 6\n3 6 5 4 3 2 1\n")
    return path


def test_split_is_leave_one_out_with_zero_based_items(data_file):
    split = beauty.load(data_file)
    assert split.n_items == 6
    assert split.user_ids.tolist() == [1, 2, 3]
    assert [s.tolist() for s in split.train] == [[0, 1, 2], [2, 3], [5, 4, 3, 2]]
    assert split.valid.tolist() == [3, 4, 1] and split.test.tolist() == [4, 5, 0]
    # test input: train + valid, newest first, truncated to max_len
    assert split.inputs("test", 3).tolist() == [[3, 2, 1], [4, 3, 2], [1, 2, 3]]
    assert split.inputs("valid", 4).tolist() == [[2, 1, 0, -1], [3, 2, -1, -1], [2, 3, 4, 5]]


def test_metrics_match_hand_computation():
    ranks = np.array([0, 4, 9, 10])
    m = beauty.metrics_from_ranks(ranks)
    assert m["recall@5"] == pytest.approx(0.5) and m["recall@10"] == pytest.approx(0.75)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(6) + 1 / np.log2(11)) / 4)


def test_ties_rank_against_the_target():
    assert beauty.rank_of_target(np.zeros((1, 5)), np.array([2])).tolist() == [4]
    assert beauty.rank_of_target(np.array([[0.1, 0.9, 0.5]]), np.array([2])).tolist() == [1]


def test_evaluate_removes_history_and_writes_top10(data_file, tmp_path):
    split = beauty.load(data_file)

    def score(rows):  # prefers high item ids; history is removed, so the target can win
        return np.tile(np.arange(split.n_items, dtype=float), (len(rows), 1))

    m, top = beauty.evaluate(split, score, topk=2)
    # user 1: history {0,1,2,3}, candidates 5, 4 -> target 4 at rank 1
    # user 2: history {2,3,4}, candidates 5, 1, 0 -> target 5 at rank 0
    # user 3: history {5,4,3,2,1}, candidate 0 -> target 0 at rank 0
    assert top[:, 0].tolist() == [5, 5, 0]
    assert m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 + 1) / 3)
    out = tmp_path / "top.txt"
    beauty.write_topk(out, split, top)
    assert out.read_text().splitlines()[0] == "1 6 5"


def test_bad_file_names_the_problem(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x\n")
    with pytest.raises(beauty.BeautyDataError, match="expected integers"):
        beauty.load(bad)
    bad.write_text("1 2 3\n")
    with pytest.raises(beauty.BeautyDataError, match="leave-one-out needs"):
        beauty.load(bad)


@pytest.mark.parametrize("embedding", ["collaborative", "sequential"])
def test_generative_bench_writes_metrics_and_each_users_top10(embedding, tmp_path, monkeypatch):
    from bench import beauty_generative

    rng = np.random.default_rng(0)
    data = tmp_path / "seq.txt"
    data.write_text("".join(f"{u} " + " ".join(map(str, rng.integers(1, 41, size=8))) + "\n" for u in range(1, 61)))
    out, top = tmp_path / "g.json", tmp_path / "top10.txt"
    monkeypatch.setattr("sys.argv", ["beauty_generative", "--data", str(data), "--out", str(out),
                                     "--topk-out", str(top), "--embedding", embedding, "--sequential-epochs", "2",
                                     "--collab-dim", "8", "--codebook", "8", "--levels", "2", "--d-model", "16",
                                     "--heads", "2", "--epochs", "2", "--valid-users", "20", "--beam", "10",
                                     "--threads", "1", "--no-results"])
    beauty_generative.main()
    (name, m), = json.loads(out.read_text()).items()
    assert "generative" in name and m["users_evaluated"] == 60 and m["stage"] == "test"
    assert all(0 <= m[k] <= 1 for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"))
    assert m["ndcg@10"] <= m["recall@10"] and m["recall@5"] <= m["recall@10"]
    lines = top.read_text().splitlines()
    assert len(lines) == 60 and all(1 <= len(line.split()) <= 11 for line in lines)
