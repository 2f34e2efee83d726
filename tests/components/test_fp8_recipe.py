"""Fp8Recipe: which projections the decoder casts to e4m3, read from its string form, honoured by
FastBeamSearch (kept projections stay plain tensors, and keeping all of them is the native search),
and passed through from the server's command line."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from common.typedconf import ConfigError
from components.recall.generative.fast_beam import FastBeamSearch
from components.recall.generative.fp8 import Fp8Recipe, Fp8Weight
from components.recall.generative.qwen import QwenConfig, QwenLM
from components.serving.genbackends import random_catalogue_trie
from components.serving.genbuild import add_arguments, build_backend
from tests.components.test_genserver import separated_model

CFG = QwenConfig(n_layer=3)


def _model() -> QwenLM:
    return separated_model(CFG)


def test_recipe_parses_labels_and_says_what_it_casts():
    r = Fp8Recipe.parse("keep=down+o,layers=0+-1,fast")
    assert r.keep == {"down", "o"} and r.keep_layers == (0, -1) and r.fast_accum
    assert r.label() == "keep=o+down,layers=0+-1,fast" and Fp8Recipe.parse(r.label()) == r
    assert Fp8Recipe.parse("").label() == "all"
    cast = {(k, i) for k in ("qkv", "o", "gate_up", "down") for i in range(5) if r.casts(k, i, 5)}
    assert cast == {(k, i) for k in ("qkv", "gate_up") for i in (1, 2, 3)}      # layer -1 is layer 4
    for bad in ("keep=mlp", "layers=x", "slow"):
        with pytest.raises(ConfigError, match="Fp8Recipe"):
            Fp8Recipe.parse(bad)


def test_search_casts_only_what_the_recipe_names_and_keeping_all_is_native():
    model, trie = _model(), random_catalogue_trie(CFG, 3000, 0)
    search = FastBeamSearch(model, trie, 5, "cpu", torch.float32, weights="fp8", fp8="keep=down,layers=-1")
    kinds = [{k: isinstance(getattr(lw, w), Fp8Weight) for k, w in
              (("qkv", "w_qkv"), ("o", "w_o"), ("gate_up", "w_gu"), ("down", "w_down"))} for lw in search.layers]
    assert kinds == [{"qkv": True, "o": True, "gate_up": True, "down": False}] * 2 + [dict.fromkeys(kinds[0], False)]
    hist = torch.from_numpy(np.random.default_rng(1).integers(CFG.sid_offset, CFG.vocab_size, (6, 12)))
    native = FastBeamSearch(model, trie, 5, "cpu", torch.float32)(hist)
    kept = FastBeamSearch(model, trie, 5, "cpu", torch.float32, weights="fp8", fp8="keep=qkv+o+gate_up+down")(hist)
    assert torch.equal(kept[0], native[0]) and torch.allclose(kept[1], native[1])
    some = search(hist)[0]   # e4m3 rounding of most projections: close to native, not required equal
    assert np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(some, native[0])]) >= 0.4


def test_server_command_line_takes_a_recipe():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-batch", type=int, default=4)
    add_arguments(ap)
    args = ap.parse_args(["--preset", "tiny", "--device", "cpu", "--weights", "fp8", "--fp8-recipe", "keep=down"])
    assert args.fp8_recipe == "keep=down" and 128 in args.buckets and 40 in args.buckets
    with pytest.raises(ConfigError, match="needs a CUDA device"):   # the CPU only emulates FP8's numbers
        build_backend(args)
