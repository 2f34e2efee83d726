"""Generative recall served under live traffic: the recall server (components/serving/genserver.py)
behind open-loop Poisson arrivals (bench/loadgen.py), one server process per path, side by side:

- transformers_generate: Qwen2ForCausalLM.generate with the trie as prefix_allowed_tokens_fn
- ours_bf16: our constrained beam search, one CUDA graph per batch bucket, bf16 weights
- ours_fp8: the same with e4m3 weights and scaled matmuls (CUDA only; skipped with a note elsewhere)
- ours_bf16_prefix: ours_bf16 with each user's history KV cached: yesterday's `--cached` tokens were
  encoded by yesterday's requests (an untimed pass), today's request sends them plus a few new ones
- ours_fp8_prefix: the same with ours_fp8's weights

The FP8 paths cast the projections `--fp8-recipe` names (Fp8Recipe.parse); its default is the recipe
whose top-10 agreement with bf16 on the trained Beauty model reached 0.95 (bench/gpu_train.json).

Per path and rate: p50 / p99 end-to-end latency (queueing included), achieved against offered rate,
and the batches the server formed; the highest rate sustained at p99 <= 100 ms. Weights are random
(latency does not depend on them; agreement and recall on a trained model: bench/gpu_train.py).

    python -m bench.gpu_serving --preset qwen2-1.5b --device cuda
    python -m bench.gpu_serving --preset tiny --device cpu --paths ours_bf16 --out bench/out/serving.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil

from bench.loadgen import BUDGET_MS, recall_body, run_rate
from bench.results import append, machine
from components.serving.genbuild import PRESETS

GPU_RATES = {"transformers_generate": [2, 5, 10, 20, 40],
             "ours_bf16": [250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500],
             "ours_fp8": [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000],
             "ours_bf16_prefix": [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000],
             "ours_fp8_prefix": [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]}
COMPILED = "torch.compile'd (pieces) in CUDA graphs"
CPU_RATES = {"transformers_generate": [2, 5], "ours_bf16": [5, 20, 50], "ours_fp8": [5],
             "ours_bf16_prefix": [5, 20, 50], "ours_fp8_prefix": [5]}
PREFIX_PATHS = ("ours_bf16_prefix", "ours_fp8_prefix")
FP8_PATHS = ("ours_fp8", "ours_fp8_prefix")


def _path_args(path: str, a) -> tuple[list[str], int]:
    """The server's command line for one path, and its max batch."""
    common = ["--preset", a.preset, "--device", a.device, "--beam", str(a.beam), "--items", str(a.items)]
    if a.switch_interval_ms is not None:
        common += ["--switch-interval-ms", str(a.switch_interval_ms)]
    if path == "transformers_generate":
        return common + ["--backend", "hf"], a.hf_max_batch
    if a.compile and path != "transformers_generate":
        common += ["--compile", "pieces"]
    if a.key_align > 1:
        common += ["--key-align", str(a.key_align)]
    if path in FP8_PATHS:
        common += ["--weights", "fp8", "--fp8-recipe", a.fp8_recipe]
    if path in PREFIX_PATHS:
        # A user whose cache cannot serve (a slot taken over, the user twice in one batch) is encoded
        # in full: that shape is captured up front too, or its first sight stalls the queue.
        return common + ["--prefix-slots", str(a.users), "--prefix-tokens", str(a.length + 8),
                         "--warm-shapes", f"{a.cached}:0,{a.length}:{a.cached},{a.length}:0"], a.prefix_max_batch
    return common + ["--warm-shapes", f"{a.length}:0"], a.max_batch


class Server:
    """One server process; READY on its stdout names its address."""

    def __init__(self, args: list[str], max_batch: int, max_wait_ms: float, log: Path):
        cmd = [sys.executable, "-m", "components.serving.genserver", "--port", "0", "--max-batch", str(max_batch),
               "--max-wait-ms", str(max_wait_ms), *args]
        self.log = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))})
        self.command = " ".join(cmd[1:])
        try:
            line = self.proc.stdout.readline()
        except BaseException:   # interrupted while it starts: no server left behind
            self.stop()
            raise
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"server did not start ({self.command}); see {log}: "
                               + log.read_text()[-300:].replace("\n", " | "))
        self.url = line.split()[1]

    def cpu(self) -> dict:
        """CPU seconds of the whole server process and of its main thread (the event loop: HTTP,
        JSON, the batcher), so a rate's row says whether the host side was the bottleneck."""
        proc = psutil.Process(self.proc.pid)
        total = proc.cpu_times()
        main = next((t for t in proc.threads() if t.id == proc.pid), None)
        return {"server_cpu_pct": total.user + total.system,
                "server_loop_cpu_pct": (main.user_time + main.system_time) if main else 0.0}

    def call(self, method: str, path: str) -> dict:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, body: bytes) -> dict:
        req = urllib.request.Request(self.url + "/recall", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _batches(stats: list, span_s: float) -> dict:
    """The batches formed; decode_busy_pct: the share of the span the model thread spent decoding
    (near 100: the decode is the bottleneck; far below while latency climbs: the host side is)."""
    if not stats:
        return {}
    rows = np.array([s[0] for s in stats])
    ms = np.array([s[2] for s in stats])
    out = {"batches": len(stats), "mean_rows": round(float(rows.mean()), 1), "max_rows": int(rows.max()),
           "decode_ms_p50": round(float(np.median(ms)), 2), "decode_ms_max": round(float(ms.max()), 2),
           "decode_busy_pct": round(float(ms.sum()) / 10 / span_s, 1)}
    gpu = np.array([s[3] for s in stats if len(s) > 3 and s[3] is not None])
    if len(gpu):   # the device's share: what a decode costs beyond it is host work (and GIL waits)
        out |= {"device_ms_p50": round(float(np.median(gpu)), 2), "device_busy_pct": round(float(gpu.sum()) / 10 / span_s, 1)}
    return out


def run_path(path: str, a, rates: list[float], log_dir: Path) -> dict:
    cfg = PRESETS[a.preset]()
    lo, hi = cfg.sid_offset, cfg.sid_offset + cfg.n_levels * cfg.codebook_size
    rng = np.random.default_rng(a.seed)
    server_args, max_batch = _path_args(path, a)
    t0 = time.perf_counter()
    server = Server(server_args, max_batch, a.max_wait_ms, log_dir / f"{path}.log")
    out = {"server": server.command, "server_start_s": round(time.perf_counter() - t0, 1), "max_batch": max_batch,
           "max_wait_ms": a.max_wait_ms, "rates": []}
    try:
        if path in PREFIX_PATHS:
            yesterday = rng.integers(lo, hi, (a.users, a.cached))
            for s in range(0, a.users, max_batch):      # yesterday's requests: their KV is what is reused
                users = list(range(s, min(s + max_batch, a.users)))
                server.post(json.dumps({"users": users, "histories": yesterday[users].tolist()}).encode())

            def make(i, r):   # a user with a history from yesterday, and today's few new tokens
                u = int(r.integers(a.users))
                return recall_body(u, np.concatenate([yesterday[u], r.integers(lo, hi, a.length - a.cached)]))
        else:
            def make(i, r):
                return recall_body(i, r.integers(lo, hi, a.length))
        server.post(make(0, rng))                        # one untimed request through the whole path
        if a.warmup > 0:                                 # and an untimed burst, as a server warms before traffic
            run_rate(server.url, rates[0], a.warmup, lambda i: make(i, rng), seed=a.seed + 10_000, procs=a.procs,
                     timeout_s=a.timeout)
        for n, rate in enumerate(rates):
            server.call("POST", "/stats/reset")
            body_rng = np.random.default_rng([a.seed, n])
            cpu = server.cpu()
            res = run_rate(server.url, rate, a.duration, lambda i: make(i, body_rng), seed=a.seed + n,
                           procs=a.procs, timeout_s=a.timeout)
            span = (res.requests - res.failed) / res.achieved if res.achieved > 0 else a.duration
            row = {**res.row(), **{k: round(100 * (v - cpu[k]) / span, 1) for k, v in server.cpu().items()},
                   **_batches(server.call("GET", "/stats")["batches"], span)}
            out["rates"].append(row)
            print(f"{path:>22} {row}", flush=True)
            if res.failed > 0.05 * res.requests or res.p99_ms > a.stop_ms or res.achieved < 0.8 * res.offered:
                break                                     # past saturation: higher rates only queue longer
    finally:
        server.stop()
    ok = [r["rate"] for r in out["rates"] if r["sustained"]]
    out["sustained_users_per_s_at_p99_100ms"] = max(ok) if ok else 0
    return out


def markdown_rows(results: dict) -> list[list]:
    rows = []
    for path, res in results.items():
        if "skipped" in res:
            rows.append([path, "-", "-", "-", "-", "-", "-", "-", res["skipped"]])
            continue
        for r in res["rates"]:
            rows.append([path, r["rate"], r["achieved"], r["p50_ms"], r["p99_ms"], r.get("mean_rows", "-"),
                         r.get("decode_ms_p50", "-"), r.get("device_ms_p50", "-"), "sustained" if r["sustained"] else ""])
    return rows


def _in_order(results: dict) -> dict:
    """The paths in GPU_RATES' order, whichever run (this one or a merged earlier one) measured them."""
    return {p: results[p] for p in [*GPU_RATES, *results] if p in results}


_INTERRUPTED = False


def _on_sigint(signum, frame) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="qwen2-1.5b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--paths", type=lambda s: s.split(","), default=list(GPU_RATES))
    ap.add_argument("--rates", default="", help="override: 'ours_bf16=100,200;ours_fp8=300'")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of arrivals per rate")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of untimed arrivals at the first rate")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds after the last arrival to wait")
    ap.add_argument("--stop-ms", type=float, default=3 * BUDGET_MS, help="stop a path's sweep past this p99")
    ap.add_argument("--length", type=int, default=150, help="history tokens")
    ap.add_argument("--cached", type=int, default=140, help="prefix path: tokens of yesterday's history")
    ap.add_argument("--users", type=int, default=4096, help="prefix path: users with a cached history")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--prefix-max-batch", type=int, default=256)
    ap.add_argument("--hf-max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--budget-s", type=float, default=0.0, help="start no path after this many seconds (0: no limit)")
    ap.add_argument("--switch-interval-ms", type=float, default=None, help="the servers' GIL switch interval")
    ap.add_argument("--fp8-recipe", default="keep=down,layers=0+-1,fast", help="the FP8 paths' Fp8Recipe")
    ap.add_argument("--key-align", type=int, default=1, help="our paths' decode steps read the history's keys "
                    "padded (masked) to a multiple of this (1: unpadded)")
    ap.add_argument("--compile", action="store_true", help="our paths torch.compile'd (the FP8 cast of activations fuses too)")
    ap.add_argument("--procs", type=int, default=4, help="client processes sharing the arrivals")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/gpu_serving.json"))
    ap.add_argument("--logs", type=Path, default=Path("bench/out/serving-logs"))
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--merge", action="store_true",
                    help="update only the paths run in an existing --out (the others keep their figures and the "
                         "command that measured them); the RESULTS section then lists every path of the file")
    a = ap.parse_args()
    unknown = set(a.paths) - set(GPU_RATES)
    if unknown:
        sys.exit(f"gpu_serving: unknown --paths {sorted(unknown)}; choose from {list(GPU_RATES)}")
    rates = dict(GPU_RATES if a.device.startswith("cuda") else CPU_RATES)
    for part in filter(None, a.rates.split(";")):
        name, _, values = part.partition("=")
        rates[name] = [float(x) for x in values.split(",")]
    a.logs.mkdir(parents=True, exist_ok=True)
    load = [round(x, 2) for x in os.getloadavg()]
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() if a.device.startswith("cuda") else ""
    command = " ".join(["python", "-m", "bench.gpu_serving", *sys.argv[1:]])
    where = {"device": gpu or "CPU", "machine": machine(), "load_average_before": load, "command": command,
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "settings": {"preset": a.preset, "compile": a.compile, "warmup_s": a.warmup, "beam": a.beam, "history_tokens": a.length, "output_tokens": 4,
                          "cached_tokens": a.cached, "fp8_recipe": a.fp8_recipe, "key_align": a.key_align, "switch_interval_ms": a.switch_interval_ms, "duration_s": a.duration, "client_procs": a.procs,
                          "max_wait_ms": a.max_wait_ms, "catalogue_items": a.items}}
    earlier = json.loads(a.out.read_text()) if a.merge and a.out.exists() else {}
    kept = [p for p in earlier if p not in a.paths]     # paths this run leaves as the earlier run measured them
    results = {p: earlier[p] for p in kept}
    started = time.perf_counter()
    for n, path in enumerate(a.paths):
        if path in FP8_PATHS and not a.device.startswith("cuda"):
            results[path] = {"skipped": "FP8 scaled matmul needs CUDA; not measured on the CPU",
                             "sustained_users_per_s_at_p99_100ms": None, "rates": []}
        elif a.budget_s and time.perf_counter() - started > a.budget_s:
            results[path] = {"skipped": f"not run: the run's --budget-s {a.budget_s} was spent",
                             "sustained_users_per_s_at_p99_100ms": None, "rates": []}
        else:
            try:
                results[path] = {**run_path(path, a, rates[path], a.logs), **where}
            except (Exception, KeyboardInterrupt) as exc:
                # Stopped from outside (a time limit's SIGINT): what ran is still written up. The signal
                # can surface as another error (a lock it broke, a server that exited on it), so the
                # handler's flag, not the exception's type, says which it was.
                if _INTERRUPTED or isinstance(exc, KeyboardInterrupt):
                    for rest in a.paths[n:]:
                        results[rest] = {"skipped": "not run to the end: the run was interrupted",
                                         "sustained_users_per_s_at_p99_100ms": None, "rates": []}
                    print(path, "interrupted", flush=True)
                    break
                # one path failing still leaves the others' figures
                results[path] = {"skipped": f"failed: {type(exc).__name__}: {exc}"[:400],
                                 "sustained_users_per_s_at_p99_100ms": None, "rates": []}
                print(path, results[path]["skipped"], flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(_in_order(results), indent=1))
    results = _in_order(results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    where["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if not a.no_results:
        best = ", ".join(f"{p} {r['sustained_users_per_s_at_p99_100ms']}" for p, r in results.items())
        merged = "".join(f"; {p} kept from an earlier run ({results[p].get('date', 'date not recorded')}: "
                         f"`{results[p].get('command', 'command not recorded')}`)" for p in kept)
        append(f"Generative recall served under open-loop Poisson load ({a.preset}, beam {a.beam}, {a.length} in, 4 out)",
               ["path", "target users/s", "achieved", "p50 ms", "p99 ms", "mean batch", "decode ms p50",
                "device ms p50", ""], markdown_rows(results),
               notes=f"figures in {a.out}; device {where['device']} ({where['machine']}); load average "
                     f"{load} before, {where['load_average_after']} after; {a.duration} s of arrivals per rate, "
                     f"{a.procs} client processes, max wait {a.max_wait_ms} ms, {a.warmup} s of untimed warm-up arrivals; our paths "
                     f"{COMPILED if a.compile else 'eager kernels in CUDA graphs'}; FP8 recipe {a.fp8_recipe}; GIL switch "
                     f"interval {a.switch_interval_ms or 5} ms in the servers; sustained users/s at p99 <= "
                     f"100 ms: {best}{merged}")
    print(json.dumps({p: r["sustained_users_per_s_at_p99_100ms"] for p, r in results.items()}))


if __name__ == "__main__":
    main()
