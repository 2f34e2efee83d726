"""The generative recall server's backend, built from its command line (one place, so the server,
the serving benchmark and the tests build the same thing)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common.typedconf import ConfigError
from components.recall.generative.beam import Trie
from components.recall.generative.fast_beam import FastBeamSearch
from components.recall.generative.kv_cache import KVSlab
from components.recall.generative.qwen import QwenConfig, QwenLM, load_checkpoint
from components.serving.genbackends import (ChannelBackend, HFBackend, QwenBackend, qwen2_from_config,
                                            random_catalogue_trie)

PRESETS = {"tiny": lambda: QwenConfig(n_levels=4, codebook_size=256, vocab_size=1200, sid_offset=150),
           "qwen2-1.5b": QwenConfig.qwen2_1p5b}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _shapes(text: str) -> list[tuple[int, int]]:
    """"150:0,150:140" -> [(150, 0), (150, 140)]: history tokens and how many of them are cached."""
    out = []
    for part in filter(None, text.split(",")):
        length, _, cached = part.partition(":")
        out.append((int(length), int(cached or 0)))
    return out


def reuse_lengths(args: argparse.Namespace) -> list[int] | None:
    """The cached lengths the prefix slab may reuse: --reuse-lengths, else the warmed ones (a shape not
    captured up front would be captured mid-traffic: a batch of most of a second), else any (None)."""
    if getattr(args, "reuse_lengths", None) is not None:
        return args.reuse_lengths
    return sorted({c for _, c in args.warm_shapes if c > 0}) if args.warm_shapes else None


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("backend")
    g.add_argument("--model", type=Path, help="a saved generative channel folder (histories in item ids)")
    g.add_argument("--backend", choices=["fast", "hf"], default="fast",
                   help="Qwen-shaped decoder: fast (our beam search) or hf (transformers generate)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape, random weights")
    g.add_argument("--checkpoint", type=Path, help="a trained QwenLM checkpoint (qwen.save_checkpoint)")
    g.add_argument("--weights", choices=["native", "fp8"], default="native")
    g.add_argument("--fp8-recipe", default="",
                   help="with --weights fp8: which projections go to e4m3 (Fp8Recipe.parse), e.g. "
                        "'keep=down,layers=0+-1,fast'; default every one")
    g.add_argument("--compile", choices=["none", "pieces"], default="none",
                   help="pieces: torch.compile the prefill and decode layers (slower start)")
    g.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    g.add_argument("--beam", type=int, default=5)
    g.add_argument("--items", type=int, default=200_000, help="random catalogue size (without --checkpoint)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--key-align", type=int, default=1,
                   help="decode steps read the history's keys padded (masked) to a multiple of this (1: unpadded)")
    g.add_argument("--no-graphs", action="store_true", help="CUDA: decode eagerly instead of replaying graphs")
    # Steps of 8 to 128 and of 16 to 256: a batch padded up to the next bucket pays for the padding
    # rows too, and under load batches land everywhere between (36 rows used to run as 48).
    g.add_argument("--buckets", type=_ints, default=[1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104,
                                                     112, 120, 128, 144, 160, 176, 192, 208, 224, 240, 256],
                   help="batch sizes captured as CUDA graphs (a batch is padded up to the next one)")
    g.add_argument("--prefix-slots", type=int, default=0, help="users whose history KV is cached (0: none)")
    g.add_argument("--prefix-tokens", type=int, default=160, help="longest history a slot holds")
    g.add_argument("--warm-shapes", type=_shapes, default=[],
                   help="history:cached token pairs whose graphs are captured before serving, e.g. 150:0,150:140")
    g.add_argument("--reuse-lengths", type=_ints, default=None,
                   help="cached lengths a request may start from (its common prefix with the slot rounded down "
                        "to one; a full prefill below them); default: the cached lengths of --warm-shapes (none "
                        "> 0: every request prefilled in full), or any length without --warm-shapes")


def build_backend(args: argparse.Namespace):
    if args.model is not None:
        from components.recall.generative import GenerativeRecaller
        if not (args.model / "config.json").exists():
            raise ConfigError(f"--model {args.model}: no saved generative channel there (config.json missing)")
        return ChannelBackend(GenerativeRecaller.load(args.model))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.weights == "fp8" and device.type != "cuda":
        raise ConfigError("--weights fp8 needs a CUDA device (its scaled matmul); the CPU only emulates it")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.checkpoint is not None:
        model, codes = load_checkpoint(args.checkpoint)
        cfg = model.config
        trie = Trie.build(codes.numpy(), cfg.codebook_size)
        model = model.to(device, dtype)
    else:
        cfg = PRESETS[args.preset]()
        trie = random_catalogue_trie(cfg, args.items, args.seed)
        with torch.device(device):
            torch.manual_seed(args.seed)
            model = QwenLM(cfg).to(dtype).eval()
    max_batch = args.max_batch
    if args.backend == "hf":
        hf = qwen2_from_config(cfg, device, dtype)
        hf.load_state_dict(model.state_dict(), strict=False)
        del model
        return HFBackend(hf, cfg, trie, args.beam, max_batch)
    search = FastBeamSearch(model, trie.to(device), args.beam, device, dtype, compile=args.compile,
                            weights=args.weights, fp8=args.fp8_recipe, key_align=args.key_align)
    del model
    slab = None
    if args.prefix_slots:
        slab = KVSlab(search, max(args.prefix_slots, max_batch), args.prefix_tokens, reuse_lengths(args))
    graphs = device.type == "cuda" and not args.no_graphs
    return QwenBackend(search, max_batch, graphs, args.buckets, slab, args.warm_shapes)
