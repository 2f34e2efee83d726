"""bench.gpu_serving and bench.gpu_train end to end on the CPU with tiny models: the serving JSON in
the issue's shape (FP8 skipped with a note), and a trained checkpoint the server decodes with."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench import gpu_train
from components.serving.genbuild import add_arguments, build_backend

REPO = Path(__file__).resolve().parents[2]


def test_serving_bench_writes_the_issue_shape(tmp_path):
    out = tmp_path / "serving.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu_serving", "--preset", "tiny", "--device", "cpu",
                          "--paths", "ours_bf16_prefix,ours_fp8,ours_bf16", "--rates", "ours_bf16_prefix=4,8",
                          "--budget-s", "0.5",   # spent by the first path: the last one is not started
                          "--duration", "1", "--users", "16", "--prefix-max-batch", "16", "--length", "30",
                          "--cached", "24", "--items", "2000", "--procs", "1", "--out", str(out),
                          "--logs", str(tmp_path / "logs"), "--no-results"],
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res) == {"ours_bf16_prefix", "ours_fp8", "ours_bf16"}
    assert "CUDA" in res["ours_fp8"]["skipped"] and res["ours_fp8"]["rates"] == []
    assert "--budget-s" in res["ours_bf16"]["skipped"] and res["ours_bf16"]["rates"] == []
    prefix = res["ours_bf16_prefix"]
    assert [r["rate"] for r in prefix["rates"]] == [4, 8]
    for r in prefix["rates"]:
        assert r["failed"] == 0 and 0 < r["p50_ms"] <= r["p99_ms"] and r["batches"] >= 1
        # where the time went: the server's CPU (its event loop's share), the model thread's, the client's
        assert 0 <= r["server_loop_cpu_pct"] <= r["server_cpu_pct"] and 0 < r["server_cpu_pct"]
        assert 0 < r["decode_busy_pct"] <= 100
        assert r["client_cpu_pct"] > 0 and r["send_lag_p99_ms"] < 1000
    assert prefix["sustained_users_per_s_at_p99_100ms"] in (0, 4, 8)
    assert prefix["settings"]["history_tokens"] == 30 and "load_average_before" in prefix
    assert prefix["command"].startswith("python -m bench.gpu_serving ") and "--budget-s 0.5" in prefix["command"]
    # --merge: a second command updates only its own paths; the others keep the first one's figures
    again = subprocess.run([sys.executable, "-m", "bench.gpu_serving", "--preset", "tiny", "--device", "cpu",
                            "--paths", "ours_fp8,ours_fp8_prefix", "--merge", "--out", str(out),
                            "--logs", str(tmp_path / "logs"), "--no-results"],
                           capture_output=True, text=True, timeout=120, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-2000:]
    merged = json.loads(out.read_text())
    assert list(merged) == ["ours_bf16", "ours_fp8", "ours_bf16_prefix", "ours_fp8_prefix"]   # GPU_RATES' order
    assert merged["ours_bf16_prefix"] == prefix and merged["ours_bf16"] == res["ours_bf16"]
    assert "CUDA" in merged["ours_fp8_prefix"]["skipped"]


def _beauty_like(path: Path, users: int = 120, items: int = 60) -> None:
    """Sequences that mostly step to the next item, so there is something to learn."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(users):
        seq = [int(rng.integers(items))]
        for _ in range(int(rng.integers(5, 12))):
            seq.append((seq[-1] + 1) % items if rng.random() < 0.8 else int(rng.integers(items)))
        lines.append(" ".join(str(x) for x in [u + 1, *(s + 1 for s in seq)]))
    path.write_text("\n".join(lines) + "\n")


def test_training_reports_fp8_beside_native_and_its_checkpoint_serves(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models train faster on one thread of a busy machine
    try:
        _train_and_serve(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_and_serve(tmp_path):
    data = tmp_path / "Beauty.txt"
    _beauty_like(data)
    a = gpu_train.parser().parse_args(
        ["--data", str(data), "--device", "cpu", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1",
         "--intermediate", "64", "--codebook", "8", "--levels", "2", "--epochs", "2", "--beam", "10",
         "--valid-users", "30", "--checkpoint", str(tmp_path / "ck.pt"), "--out", str(tmp_path / "t.json")])
    out = gpu_train.run(a)
    assert out["users"] == 120 and out["epochs_run"] == 2 and out["fp8"]["emulated"] is True
    for name in ("fp32", "fp8"):
        assert 0 <= out[name]["recall@10"] <= 1 and out[name]["recall@5"] <= out[name]["recall@10"]
    assert 0.5 <= out["fp8_top10_agreement"] <= 1
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-batch", type=int, default=8)
    add_arguments(ap)
    backend = build_backend(ap.parse_args(["--checkpoint", str(tmp_path / "ck.pt"), "--device", "cpu", "--beam", "5"]))
    hist = np.array([1, 2 + 0, 2 + 8 + 1])   # BOS, then the first item's two tokens (level 0 code 0, level 1 code 1)
    items, scores = backend.decode([0], [hist])
    assert items.shape == (1, 5) and ((items >= 0) & (items < 60)).all() and np.all(np.diff(scores[0]) <= 1e-6)
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["codes"].shape[0] == 60


def test_an_interrupted_run_still_writes_what_it_has(tmp_path):
    """A time limit's SIGINT during a server's start: the path and those after it are reported as
    interrupted (not as failures), and the run exits cleanly with its JSON written."""
    out, logs = tmp_path / "serving.json", tmp_path / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.gpu_serving", "--preset", "tiny", "--device", "cpu",
                             "--paths", "ours_bf16,ours_bf16_prefix", "--rates", "ours_bf16=4", "--duration", "30",
                             "--items", "2000", "--procs", "1", "--out", str(out), "--logs", str(logs), "--no-results"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (logs / "ours_bf16.log").exists() and time.monotonic() < deadline:   # the first server is starting
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    res = json.loads(out.read_text())
    assert set(res) == {"ours_bf16", "ours_bf16_prefix"}
    assert all(r["skipped"] == "not run to the end: the run was interrupted" and r["rates"] == [] for r in res.values())
