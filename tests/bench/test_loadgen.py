"""The load generator: seeded Poisson arrivals at the asked rate, fired open-loop, and latency that
counts the time a request waited in the server's queue."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bench.loadgen import RateResult, poisson_arrivals, recall_body, run_rate
from components.recall.generative.fast_beam import FastBeamSearch
from components.recall.generative.qwen import QwenConfig, QwenLM
from components.serving.genbackends import QwenBackend, random_catalogue_trie
from components.serving.genserver import GenServer


def test_arrivals_are_poisson_at_the_seeded_rate():
    t = poisson_arrivals(200.0, 50.0, seed=7)
    assert abs(len(t) - 10_000) < 4 * 100                       # count ~ Poisson(rate * duration)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert abs(gaps.mean() * 200 - 1) < 0.03 and abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert stats.kstest(gaps, "expon", args=(0, 1 / 200)).pvalue > 1e-3
    counts = np.bincount((t * 10).astype(int), minlength=500)   # per 0.1 s window: mean = variance
    assert abs(counts.mean() - 20) < 1 and abs(counts.var() / counts.mean() - 1) < 0.2
    assert np.array_equal(t, poisson_arrivals(200.0, 50.0, seed=7)) and (t < 50).all() and (np.diff(t) > 0).all()
    assert not np.array_equal(t[:100], poisson_arrivals(200.0, 50.0, seed=8)[:100])
    with pytest.raises(ValueError, match="positive"):
        poisson_arrivals(0, 1, 0)


def test_latency_counts_the_queue_and_sustained_needs_pace_and_p99():
    cfg = QwenConfig()
    torch.manual_seed(0)
    search = FastBeamSearch(QwenLM(cfg).eval(), random_catalogue_trie(cfg, 500, 0), 5, "cpu", torch.float32)
    # Batches wait up to 120 ms for company: at 15 requests/s nearly every request waits it out, and
    # the client's clock sees that wait.
    url, stop = GenServer(QwenBackend(search, 64, graphs=False), max_batch=64, max_wait_ms=120).start_in_thread()
    rng = np.random.default_rng(0)
    try:
        res = run_rate(url, 15.0, 1.0, lambda i: recall_body(i, rng.integers(cfg.sid_offset, 260, 10)), seed=1)
    finally:
        stop()
    assert res.failed == 0 and res.requests == len(poisson_arrivals(15.0, 1.0, 1))
    assert res.p50_ms >= 60 and res.p99_ms >= 110               # the batcher's wait is in the latency
    assert not res.sustained and res.row()["sustained"] is False   # p99 over 100 ms
    ok = RateResult(rate=100, offered=98.0, achieved=97.0, requests=294, failed=0, p50_ms=20, p99_ms=80)
    assert ok.sustained
    assert not RateResult(**{**ok.__dict__, "achieved": 80.0}).sustained      # fell behind the arrivals
    assert not RateResult(**{**ok.__dict__, "failed": 1}).sustained
    assert RateResult(**{**ok.__dict__, "p99_ms": float("inf")}).row()["p99_ms"] is None
