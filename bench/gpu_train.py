"""The Qwen-shaped decoder trained on Amazon Beauty, so that FP8's agreement and recall mean something.

The project's semantic-id pipeline (collaborative item embeddings, residual k-means, a unique last
level) gives every item L codes; the QwenLM (RMSNorm, rotary, grouped-query attention, SwiGLU) reads
a user's last 20 items as L tokens each in the channel's token layout (0 pad, 1 BOS, level l's code c
at 2 + l K + c) and learns the next item's tokens, each scored among its level's codes (what the
beam chooses between), the epoch picked on the validation items' recall@10. Then on the test items
(leave-one-out, data README): our FastBeamSearch with bf16 weights (fp32 on the CPU) and with e4m3
weights (`fp8`; on the CPU its rounding is emulated, not its speed), recall@10 / NDCG@10 of each,
and the share of FP8's top 10 that is in bf16's top 10. The checkpoint serves as is:
`python -m components.serving.genserver --checkpoint bench/out/beauty-qwen.pt`.

    python -m bench.gpu_train --data /work/shared/data/amazon-beauty/Beauty.txt --device cuda
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench import beauty
from bench.results import append, machine
from components.recall.generative.beam import Trie
from components.recall.generative.embeddings import item_embeddings
from components.recall.generative.fast_beam import FastBeamSearch
from components.recall.generative.fp8 import Fp8Recipe
from components.recall.generative.model import PAD, SPECIAL
from components.recall.generative.quantize import QuantizerConfig
from components.recall.generative.qwen import QwenConfig, QwenLM, save_checkpoint
from components.recall.generative.semantic_ids import build_semantic_ids
from components.recall.generative.train import TrainConfig, history_tokens, item_tokens, train_gpt, training_sequences


def qwen_level_loss(model: QwenLM, x: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of right-padded rows x [B, T] (BOS + items' tokens), each token
    among its own level's codes; as train.level_loss, for the Qwen-shaped model."""
    cfg = model.config
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda else contextlib.nullcontext())
    with autocast:
        logits = model(x[:, :-1], key_valid=x[:, :-1] != PAD)                         # [B, T-1, V]
    total = logits.new_zeros((), dtype=torch.float32)
    for level in range(cfg.n_levels):
        lo, hi = cfg.level_tokens(level)
        target = x[:, 1 + level:: cfg.n_levels]                                       # [B, T_l]
        target = torch.where(target == PAD, -100, target - lo)
        lv = logits[:, level:: cfg.n_levels, lo:hi].float()                           # [B, T_l, K]
        total = total + F.cross_entropy(lv.reshape(-1, hi - lo), target.reshape(-1), ignore_index=-100,
                                        reduction="sum")
    return total


def beam_top(search: FastBeamSearch, rows: np.ndarray, batch: int) -> np.ndarray:
    """Left-padded token rows [U, T] -> beam items [U, beam] (-1 where fewer)."""
    out = []
    for lo in range(0, len(rows), batch):
        x = torch.from_numpy(rows[lo: lo + batch]).to(search.device)
        items, _ = search(x, x != PAD)
        out.append(items.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, search.beam), np.int64)


def recall_at(top: np.ndarray, target: np.ndarray, k: int) -> float:
    return float((top[:, :k] == target[:, None]).any(1).mean()) if len(target) else 0.0


def ndcg_at(top: np.ndarray, target: np.ndarray, k: int) -> float:
    hit = top[:, :k] == target[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), -1)
    return float(np.where(rank >= 0, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0).mean()) if len(target) else 0.0


def agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean share of a's top k that is in b's top k."""
    return float(np.mean([len(set(x[:k]) & set(y[:k])) / k for x, y in zip(a, b)])) if len(a) else 0.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/amazon-beauty/Beauty.txt"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--users", type=int, default=0, help="train and test on the first N users (0: all)")
    p.add_argument("--codebook", type=int, default=256)
    p.add_argument("--levels", type=int, default=3, help="quantised levels (a unique level is added)")
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--budget-s", type=float, default=240.0, help="cap on training time")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--valid-users", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp8-recipes", default="",
                   help="';'-separated Fp8Recipe strings, each measured; the first is reported as fp8 ('' = all)")
    p.add_argument("--out", type=Path, default=Path("bench/gpu_train.json"))
    p.add_argument("--checkpoint", type=Path, default=Path("bench/out/beauty-qwen.pt"))
    p.add_argument("--no-results", action="store_true")
    return p


def run(a: argparse.Namespace) -> dict:
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    split = beauty.load(a.data)
    if a.users:
        keep = np.arange(min(a.users, len(split.user_ids)))
        split = beauty.Split(split.user_ids[keep], [split.train[i] for i in keep], split.valid[keep],
                             split.test[keep], split.n_items)
    t0 = time.perf_counter()
    emb = item_embeddings("collaborative", sequences=split.train, n_items=split.n_items, dim=64, window=3)
    ids = build_semantic_ids(emb, QuantizerConfig(method="rqkmeans", levels=a.levels, codebook_size=a.codebook), a.seed)
    k, n_levels = ids.codebook_size, ids.n_levels
    cfg = QwenConfig(vocab_size=SPECIAL + n_levels * k, sid_offset=SPECIAL, n_levels=n_levels, codebook_size=k,
                     hidden=a.hidden, n_layer=a.layers, n_head=a.heads, n_kv_head=a.kv_heads,
                     intermediate=a.intermediate)
    tokens = item_tokens(ids.codes, k)                                                # [I, L], channel layout
    trie = Trie.build(ids.codes, k).to(device)
    data = training_sequences(split.train, tokens, beauty.MAX_INPUT)
    ids_s = time.perf_counter() - t0
    native = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = QwenLM(cfg).to(device)
    vu = np.random.default_rng(1).choice(len(split.user_ids), min(a.valid_users, len(split.user_ids)), replace=False)
    valid_rows = history_tokens([split.train[u][-beauty.MAX_INPUT:] for u in vu], tokens, beauty.MAX_INPUT, left_pad=True)

    def validate(m: QwenLM) -> float:
        top = beam_top(FastBeamSearch(m.eval(), trie, a.beam, device, native), valid_rows, 512)
        return -recall_at(top, split.valid[vu], 10)

    t1 = time.perf_counter()
    log = train_gpt(model, data, TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=0.1,
                                             max_seconds=a.budget_s, select_by="recall"),
                    a.seed, validate, qwen_level_loss)
    train_s = time.perf_counter() - t1
    test_hist = [np.append(t, v)[-beauty.MAX_INPUT:] for t, v in zip(split.train, split.valid)]
    rows = history_tokens(test_hist, tokens, beauty.MAX_INPUT, left_pad=True)        # [U, 1 + 20 L]
    target = split.test
    out = {"data": str(a.data), "users": len(target), "items": split.n_items, "device": str(device),
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "machine": machine(),
           "load_average_before": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
           "config": cfg.__dict__, "parameters": sum(p.numel() for p in model.parameters()),
           "train_windows": len(data), "ids_seconds": round(ids_s, 1), "train_seconds": round(train_s, 1),
           "epochs_run": len(log.losses), "best_epoch": log.best_epoch,
           "valid_recall@10_best": round(-min(log.valid), 4) if log.valid else None, "beam": a.beam,
           "ids": {key: round(v, 4) for key, v in ids.metrics(emb).items()}}
    tops = {}

    def measure(name: str, weights: str, dtype: torch.dtype, recipe: str = "") -> dict:
        search = FastBeamSearch(model, trie, a.beam, device, dtype, weights=weights, fp8=recipe)
        t2 = time.perf_counter()
        tops[name] = top = beam_top(search, rows, 512)
        return {"recall@10": round(recall_at(top, target, 10), 4), "ndcg@10": round(ndcg_at(top, target, 10), 4),
                "recall@5": round(recall_at(top, target, 5), 4), "decode_seconds": round(time.perf_counter() - t2, 2)}
    first = "bf16" if device.type == "cuda" else "fp32"
    out[first] = measure(first, "native", native)
    if device.type == "cuda":
        # bf16 against float32 on the same weights: how far plain rounding alone moves the top 10, the
        # floor FP8's agreement is read against.
        out["fp32"] = measure("fp32", "native", torch.float32)
        out["fp32_top10_agreement_with_bf16"] = round(agreement(tops["fp32"], tops[first], 10), 4)
    recipes = a.fp8_recipes.split(";")          # "" gives [""]: every projection in e4m3
    out["fp8_variants"] = {}
    for i, recipe in enumerate(recipes):
        label = Fp8Recipe.parse(recipe).label()
        res = measure(f"fp8:{label}", "fp8", native, recipe)
        res["top10_agreement"] = round(agreement(tops[f"fp8:{label}"], tops[first], 10), 4)
        out["fp8_variants"][label] = res
        if i == 0:   # the first recipe is the one reported as "fp8" (what the server is told to use)
            out["fp8"] = {**res, "recipe": label}
    out["fp8"]["emulated"] = device.type != "cuda"
    out["fp8_top10_agreement"] = out["fp8"]["top10_agreement"]
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if a.checkpoint:
        a.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(a.checkpoint, model.cpu(), ids.codes)
        out["checkpoint"] = str(a.checkpoint)
    return out


def main() -> None:
    a = parser().parse_args()
    try:
        out = run(a)
    except beauty.BeautyDataError as exc:
        raise SystemExit(f"gpu_train: {exc}") from None
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    native = "bf16" if "bf16" in out else "fp32"
    if not a.no_results:
        cfg = out["config"]
        append(f"Qwen-shaped generative recall trained on Beauty ({cfg['hidden']} hidden x {cfg['n_layer']} layers, "
               f"{out['parameters']:,} parameters): FP8 against {native}",
               ["weights", "recall@10", "NDCG@10", "recall@5", "top-10 agreement with " + native, "decode s (all users)"],
               [[native, out[native]["recall@10"], out[native]["ndcg@10"], out[native]["recall@5"], 1.0,
                 out[native]["decode_seconds"]]]
               + ([["fp32", out["fp32"]["recall@10"], out["fp32"]["ndcg@10"], out["fp32"]["recall@5"],
                    out["fp32_top10_agreement_with_bf16"], out["fp32"]["decode_seconds"]]] if "fp32" in out and native != "fp32" else [])
               + [[f"fp8 e4m3 ({label})" + (" (emulated on the CPU)" if out["fp8"]["emulated"] else ""), v["recall@10"],
                   v["ndcg@10"], v["recall@5"], v["top10_agreement"], v["decode_seconds"]]
                  for label, v in out["fp8_variants"].items()],
               notes=f"figures in {a.out}; device {out['gpu'] or 'CPU'} ({out['machine']}), load average "
                     f"{out['load_average_before']} before; {out['users']} users, leave-one-out test items, beam "
                     f"{out['beam']}, no seen-item filter; trained {out['train_seconds']} s, {out['epochs_run']} "
                     f"epochs, best validation recall@10 {out['valid_recall@10_best']} at epoch {out['best_epoch']}")
    print(json.dumps({k: v for k, v in out.items() if k != "ids"}, indent=1))


if __name__ == "__main__":
    main()
