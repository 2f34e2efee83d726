"""Where the decoder's time goes, per weight format: the projection GEMMs alone and the whole search.

1. gemms: each projection's matrix product at the prefill's and a decode step's row counts, bf16
   against e4m3 (`fp8`) with per-row scales, with and without fast accumulation, against one
   per-tensor scale, and the activation cast (amax, divide, cast) eager and compiled: TFLOP/s each.
2. search: the whole constrained beam search (torch.compile'd pieces, one CUDA graph per batch) per
   weight variant and batch size, median ms by CUDA events over graph replays, and torch.profiler's
   kernel table for one call at --profile-batch.
3. prefix: the same for a batch whose first --cached history tokens come from the KV slab.

    python -m bench.gpu_profile --preset qwen2-1.5b --device cuda --out $OUT/profile.json
    python -m bench.gpu_profile --preset tiny --device cpu --batches 2 --profile-batch 2 --prefix-batch 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench.results import machine
from components.recall.generative.fast_beam import CudaGraphSearch, FastBeamSearch
from components.recall.generative.fp8 import _rows_e4m3, quantize
from components.recall.generative.qwen import QwenLM
from components.serving.genbackends import _WithKV, random_catalogue_trie
from components.serving.genbuild import PRESETS


def bench_ms(fn, device: torch.device, reps: int = 20) -> float:
    """Median ms of fn(): CUDA events on the GPU, the host clock elsewhere; warmed up first."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def gemm_table(cfg, rows: list[int], device: torch.device) -> list[dict]:
    """Every projection shape x row count: TFLOP/s of each way to compute it."""
    shapes = {"qkv": ((cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, cfg.hidden),
              "o": (cfg.hidden, cfg.n_head * cfg.head_dim), "gate_up": (2 * cfg.intermediate, cfg.hidden),
              "down": (cfg.hidden, cfg.intermediate)}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cast = torch.compile(_rows_e4m3) if device.type == "cuda" else _rows_e4m3
    out = []
    for name, (n, k) in shapes.items():
        w = torch.randn(n, k, device=device, dtype=dtype) * 0.02
        wq = quantize(w)
        one = torch.ones((), device=device)
        for m in rows:
            x = torch.randn(m, k, device=device, dtype=dtype)
            xq, sx = _rows_e4m3(x)
            flop = 2 * m * n * k
            ways = {"native": lambda: F.linear(x, w), "cast_eager": lambda: _rows_e4m3(x), "cast_compiled": lambda: cast(x)}
            if device.type == "cuda":
                for fast in (False, True):
                    ways[f"fp8_rowwise{'_fast' if fast else ''}"] = (
                        lambda fast=fast: torch._scaled_mm(xq, wq.data.t(), scale_a=sx, scale_b=wq.scale,
                                                           out_dtype=dtype, use_fast_accum=fast))
                    ways[f"fp8_tensor{'_fast' if fast else ''}"] = (
                        lambda fast=fast: torch._scaled_mm(xq, wq.data.t(), scale_a=one, scale_b=one,
                                                           out_dtype=dtype, use_fast_accum=fast))
            row = {"proj": name, "m": m, "n": n, "k": k}
            for way, fn in ways.items():
                try:
                    ms = bench_ms(fn, device)
                except Exception as exc:   # a kernel this build lacks is reported, the rest still run
                    row[way] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                    continue
                row[way + "_ms"] = round(ms, 4)
                if not way.startswith("cast"):
                    row[way + "_tflops"] = round(flop / ms / 1e9, 1)
            out.append(row)
            print("gemm", row, flush=True)
    return out


def kernel_table(fn, device: torch.device, rows: int) -> list[dict]:
    """torch.profiler's kernels of one call of fn, the largest first: name, calls, total ms."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attr = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device.type == "cuda":   # kernels only: the CPU-side ops would count their kernels twice
        events = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    events.sort(key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in events) / 1e3
    table = [{"kernel": e.key[:110], "calls": e.count, "ms": round(getattr(e, attr) / 1e3, 3)} for e in events[:rows]]
    return [{"kernel": "TOTAL", "calls": sum(e.count for e in events), "ms": round(total, 3)}] + table


def search_rows(search: FastBeamSearch, batches: list[int], length: int, vocab, device, past_length: int = 0,
                fn=None) -> list[dict]:
    out = []
    fn = fn or search
    for b in batches:
        idx = torch.randint(*vocab, (b, length), device=device)
        if device.type == "cuda":
            graph = CudaGraphSearch(fn, b, length, past_length)
            graph.idx.copy_(idx)
            ms = bench_ms(graph.graph.replay, device)
            del graph
        else:
            past = _random_past(search, b, past_length, device)
            ms = bench_ms(lambda: fn(idx, None, past), device, reps=3)
        out.append({"batch": b, "ms": round(ms, 2), "ms_per_user": round(ms / b, 4), "users_per_s": round(b / ms * 1e3, 1)})
        print("search", length, past_length, out[-1], flush=True)
    return out


def _random_past(search: FastBeamSearch, b: int, t0: int, device) -> list | None:
    if not t0:
        return None
    cfg = search.cfg
    return [(torch.randn(b, cfg.n_kv_head, t0, cfg.head_dim, device=device, dtype=search.dtype),
             torch.randn(b, cfg.n_kv_head, t0, cfg.head_dim, device=device, dtype=search.dtype)) for _ in range(cfg.n_layer)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-1.5b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--parts", type=lambda s: s.split(","), default=["gemms", "search", "prefix"])
    ap.add_argument("--variants", type=lambda s: s.split(";"), default=["native", "fp8:", "fp8:fast"],
                    help="weight variants: native, or fp8:RECIPE (Fp8Recipe.parse), ';'-separated")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    ap.add_argument("--gemm-rows", type=lambda s: [int(x) for x in s.split(",")], default=[640, 4800, 9600, 19200])
    ap.add_argument("--profile-batch", type=int, default=64)
    ap.add_argument("--prefix-batch", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256])
    ap.add_argument("--length", type=int, default=150)
    ap.add_argument("--cached", type=int, default=140)
    ap.add_argument("--compile", default="pieces", choices=["none", "pieces"])
    ap.add_argument("--key-align", type=lambda s: [int(x) for x in s.split(",")], default=[1],
                    help="each variant's search with the decode steps' keys padded to each of these multiples")
    ap.add_argument("--rows", type=int, default=30, help="kernel-table rows kept")
    ap.add_argument("--out", type=Path, default=Path("bench/out/gpu_profile.json"))
    a = ap.parse_args()
    device = torch.device(a.device)
    cfg = PRESETS[a.preset]()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vocab = (cfg.sid_offset, cfg.sid_offset + cfg.n_levels * cfg.codebook_size)
    res = {"command": " ".join(["python -m bench.gpu_profile", *sys.argv[1:]]), "machine": machine(),
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def save():
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1))
    if "gemms" in a.parts:
        res["gemms"] = gemm_table(cfg, a.gemm_rows, device)
        save()
    trie = random_catalogue_trie(cfg, 200_000 if a.preset != "tiny" else 3000, 0)
    with torch.device(device):
        torch.manual_seed(0)
        model = QwenLM(cfg).to(dtype).eval()
    runs = [(v, k) for v in a.variants for k in a.key_align] if "search" in a.parts or "prefix" in a.parts else []
    for variant, align in runs:
        weights, _, recipe = variant.partition(":")
        search = FastBeamSearch(model, trie.to(device), 5, device, dtype, compile=a.compile, weights=weights, fp8=recipe,
                                key_align=align)
        key = (variant if weights == "native" else f"fp8:{search.fp8.label()}") + (f"+keys%{align}" if align > 1 else "")
        entry = res.setdefault("search", {}).setdefault(key, {})
        try:
            if "search" in a.parts:
                entry["rows"] = search_rows(search, a.batches, a.length, vocab, device)
                idx = torch.randint(*vocab, (a.profile_batch, a.length), device=device)
                entry["kernels"] = kernel_table(lambda: search(idx), device, a.rows)
                print(key, "kernels", json.dumps(entry["kernels"][:12]), flush=True)
            if "prefix" in a.parts and a.cached:
                fn = _WithKV(search)
                new = a.length - a.cached
                entry["prefix_rows"] = search_rows(search, a.prefix_batch, new, vocab, device, a.cached, fn)
                b = a.prefix_batch[-1]
                idx, past = torch.randint(*vocab, (b, new), device=device), _random_past(search, b, a.cached, device)
                entry["prefix_kernels"] = kernel_table(lambda: fn(idx, None, past), device, a.rows)
                print(key, "prefix kernels", json.dumps(entry["prefix_kernels"][:12]), flush=True)
        except Exception as exc:   # one variant failing still leaves the others' figures
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(key, entry["error"], flush=True)
        save()
        del search
        if device.type == "cuda":
            torch.cuda.empty_cache()
    save()
    summary = {k: [(r["batch"], r["ms"]) for r in v.get("rows", []) + v.get("prefix_rows", [])]
               for k, v in res.get("search", {}).items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
