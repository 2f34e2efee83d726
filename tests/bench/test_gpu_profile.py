"""bench.gpu_profile on the CPU with the tiny model: the GEMM table, the whole-search timings and the
kernel (here: operator) tables per weight variant, with the prefix path, in the JSON it writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_profile_writes_gemms_searches_and_kernel_tables(tmp_path):
    out = tmp_path / "profile.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu_profile", "--preset", "tiny", "--device", "cpu",
                          "--compile", "none", "--batches", "2", "--profile-batch", "2", "--prefix-batch", "2",
                          "--gemm-rows", "16", "--length", "30", "--cached", "24", "--rows", "5",
                          "--variants", "native;fp8:keep=down,fast", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {r["proj"] for r in res["gemms"]} == {"qkv", "o", "gate_up", "down"}
    for r in res["gemms"]:   # the rate is the product's operations over its median time
        assert r["native_ms"] > 0 and r["cast_eager_ms"] > 0 and r["cast_compiled_ms"] > 0
        assert abs(r["native_tflops"] - 2 * r["m"] * r["n"] * r["k"] / r["native_ms"] / 1e9) <= 0.06
    assert set(res["search"]) == {"native", "fp8:keep=down,fast"}          # the recipe's own label
    for entry in res["search"].values():
        assert [r["batch"] for r in entry["rows"]] == [2] and entry["rows"][0]["ms"] > 0
        assert [r["batch"] for r in entry["prefix_rows"]] == [2]
        for table in (entry["kernels"], entry["prefix_kernels"]):
            assert table[0]["kernel"] == "TOTAL" and table[0]["ms"] >= max(r["ms"] for r in table[1:])
