"""The GPU decoding path (shared-prefix KV cache, per-level head slices, trie masks) returns the same
items as the plain no-cache reference on the same weights; the CUDA graph only where there is a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.typedconf import ConfigError
from components.recall.generative.beam import Trie
from components.recall.generative.fast_beam import CudaGraphSearch, FastBeamSearch, reference_beam_search
from components.recall.generative.fp8 import Fp8Weight
from components.recall.generative.kv_cache import UserKVCache, recall_with_cache
from components.recall.generative.qwen import QwenConfig, QwenLM


def _setup(seed: int, n_items: int = 300):
    torch.manual_seed(seed)
    cfg = QwenConfig()
    model = QwenLM(cfg).eval()
    with torch.no_grad():   # larger weights than the init so that scores separate clearly
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(25)
    rng = np.random.default_rng(seed)
    k = cfg.codebook_size
    flat = rng.choice(k ** cfg.n_levels, size=n_items, replace=False)
    codes = np.stack([(flat // k ** i) % k for i in range(cfg.n_levels)][::-1], axis=1).astype(np.int64)
    return cfg, model, Trie.build(codes, k), codes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_search_matches_reference(seed):
    cfg, model, trie, codes = _setup(seed)
    hist = torch.randint(0, cfg.vocab_size, (6, 11))
    ref_items, ref_scores = reference_beam_search(model, hist, trie, beam=5)
    items, scores = FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32)(hist)
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    # Every returned item is in the catalogue and scores are sorted best first.
    assert ((items >= 0) & (items < len(codes))).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_left_padded_rows_match_their_unpadded_selves():
    cfg, model, trie, _ = _setup(3)
    hist = torch.randint(0, cfg.vocab_size, (4, 9))
    valid = torch.ones_like(hist, dtype=torch.bool)
    valid[1, :4] = False
    valid[3, :8] = False
    padded = hist.masked_fill(~valid, 0)
    search = FastBeamSearch(model, trie, beam=4, device="cpu", dtype=torch.float32)
    items, scores = search(padded, valid)
    ref_items, ref_scores = reference_beam_search(model, padded, trie, 4, valid)
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    alone, _ = search(hist[1:2, 4:])
    assert torch.equal(items[1:2], alone)


def test_keys_padded_to_an_alignment_give_the_unpadded_result():
    """key_align pads the keys the decode steps read (zero keys, masked): the same items and scores,
    for plain, left-padded and after-cached-keys rows, whether or not the length is already aligned."""
    cfg, model, trie, _ = _setup(4)
    plain = FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32)
    aligned = FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32, key_align=8)
    for t in (11, 16):
        hist = torch.randint(0, cfg.vocab_size, (4, t))
        valid = torch.ones_like(hist, dtype=torch.bool)
        valid[2, :5] = False
        for args in ((hist,), (hist.masked_fill(~valid, 0), valid)):
            items, scores = aligned(*args)
            ref_items, ref_scores = plain(*args)
            assert torch.equal(items, ref_items)
            torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)
        past = plain.search(hist[:, :t - 3])[2]
        assert torch.equal(aligned(hist[:, t - 3:], past=past)[0], plain(hist)[0])
    with pytest.raises(ConfigError):
        FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32, key_align=0)


def test_sparse_catalogue_returns_only_existing_items_and_pads_with_minus_one():
    cfg, model, trie, codes = _setup(4, n_items=3)
    items, scores = FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32)(
        torch.randint(0, cfg.vocab_size, (2, 7)))
    assert (items[:, 3:] == -1).all() and torch.isinf(scores[:, 3:]).all()
    assert sorted(items[0, :3].tolist()) == [0, 1, 2]


def test_production_shape_config_and_bad_config():
    big = QwenConfig.qwen2_1p5b()
    assert (big.hidden, big.n_layer, big.n_head, big.n_kv_head, big.intermediate) == (1536, 28, 12, 2, 8960)
    assert big.level_tokens(3) == (150_768, 151_024) and big.level_tokens(3)[1] <= big.vocab_size
    with pytest.raises(ConfigError, match="sid_offset"):
        QwenConfig(vocab_size=100, sid_offset=90)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_search_matches_eager_on_gpu():
    cfg, model, trie, _ = _setup(5)
    search = FastBeamSearch(model, trie, beam=5, device="cuda", dtype=torch.float32)
    hist = torch.randint(0, cfg.vocab_size, (8, 12), device="cuda")
    graphed = CudaGraphSearch(search, batch=8, length=12)
    items, _ = graphed(hist)
    assert torch.equal(items, search(hist)[0])
    few, _ = graphed(hist[:3])                  # a smaller batch rides in the captured one's first rows
    assert torch.equal(few, items[:3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and FP8 matmuls need a GPU")
def test_server_backend_graphs_prefix_and_fp8_on_gpu():
    from components.recall.generative.kv_cache import KVSlab
    from components.serving.genbackends import QwenBackend
    cfg, model, trie, _ = _setup(8)
    search = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.float32)
    hist = torch.randint(0, cfg.vocab_size, (6, 16)).numpy()
    eager = QwenBackend(search, 8, graphs=False).decode(range(6), list(hist))[0]
    graphed = QwenBackend(search, 8, graphs=True, buckets=[2, 4], shapes=[(16, 0)])
    graphed.warm()
    assert (graphed.decode(range(6), list(hist))[0] == eager).all() and graphed.device_ms > 0
    cached = QwenBackend(search, 8, graphs=True, buckets=[4], slab=KVSlab(search, 8, 20, reuse_lengths=[12]))
    cached.decode(range(6), list(hist[:, :12]))
    assert (cached.decode(range(6), list(hist))[0] == eager).all()
    # Users 0-2 again (15 tokens in common, reused as 12: their prefixes gathered into the graph's
    # buffer) beside two new users (a full prefill): two graphs in one batch.
    again = cached.decode([0, 1, 2, 6, 7], list(hist[:5]))[0]
    assert (again == eager[:5]).all() and {k[1:] for k in cached._graphs} == {(4, 12), (12, 0), (16, 0)}
    fp8 = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.bfloat16, weights="fp8")
    assert fp8(torch.from_numpy(hist).cuda())[0].shape == (6, 5)
    native = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.bfloat16)
    kept = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.bfloat16, weights="fp8",
                          fp8="keep=qkv+o+gate_up,layers=0,fast")   # only later layers' down_proj in e4m3
    x = torch.from_numpy(hist).cuda()
    assert kept(x)[0].shape == (6, 5) and isinstance(kept.layers[-1].w_down, Fp8Weight)
    assert not isinstance(kept.layers[0].w_down, Fp8Weight) and not isinstance(kept.layers[-1].w_gu, Fp8Weight)
    # fast accumulation on the GPU's scaled matmul: the same top items as native bf16 for most rows
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(kept(x)[0], native(x)[0])])
    assert overlap >= 0.6


def test_prefix_kv_reuse_gives_the_full_prefill_result():
    cfg, model, trie, _ = _setup(6)
    search = FastBeamSearch(model, trie, beam=5, device="cpu", dtype=torch.float32)
    full = torch.randint(0, cfg.vocab_size, (5, 15))
    ref_items, ref_scores = reference_beam_search(model, full, trie, beam=5)
    # Directly: the first 11 tokens' keys from an earlier prefill, then only the last 4 tokens.
    past = search.search(full[:, :11])[2]
    items, scores = search(full[:, 11:], past=past)
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    # Through the LRU, across two "days": users 0-2 seen with 11 tokens, then everyone with 15.
    store = UserKVCache(max_users=8)
    recall_with_cache(search, store, [0, 1, 2], [full[i, :11] for i in range(3)])
    items, scores, reused = recall_with_cache(search, store, [0, 1, 2, 3, 4], list(full))
    assert reused == [11, 11, 11, 0, 0]
    assert torch.equal(items, ref_items)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-4, atol=1e-4)
    # A repeated request recomputes only the last token; a changed history reuses its common prefix.
    again = full[0].clone()
    again[7] = (again[7] + 1) % cfg.vocab_size
    items, _, reused = recall_with_cache(search, store, [1, 0], [full[1], again])
    assert reused == [14, 7]
    assert torch.equal(items[0], ref_items[1])
    assert torch.equal(items[1], reference_beam_search(model, again[None], trie, beam=5)[0][0])


def test_user_kv_cache_is_bounded_lru():
    cfg, model, trie, _ = _setup(7)
    search = FastBeamSearch(model, trie, beam=3, device="cpu", dtype=torch.float32)
    store = UserKVCache(max_users=2)
    hist = torch.randint(0, cfg.vocab_size, (3, 6))
    recall_with_cache(search, store, [10, 11], [hist[0], hist[1]])
    store.get(10)                      # 10 is now the most recent, so 11 goes first
    recall_with_cache(search, store, [12], [hist[2]])
    assert len(store) == 2 and store.get(11) is None and store.get(10) is not None
    assert store.get(12).kv[0][0].shape == (1, cfg.n_kv_head, 6, cfg.head_dim)
    with pytest.raises(ConfigError, match="max_users"):
        UserKVCache(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled pieces are what the GPU serves")
def test_compiled_pieces_after_cached_keys_match_eager_on_gpu():
    cfg, model, trie, _ = _setup(9)
    model = model.cuda()
    eager = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.float32)
    compiled = FastBeamSearch(model, trie.to("cuda"), beam=5, device="cuda", dtype=torch.float32, compile="pieces")
    full = torch.randint(0, cfg.vocab_size, (4, 15), device="cuda")
    for cut in (11, 14):   # several new tokens after the cached ones, and the last one alone
        past = eager.search(full[:, :cut])[2]
        want, got = eager(full[:, cut:], past=past), compiled(full[:, cut:], past=past)
        assert torch.equal(got[0], want[0]) and torch.equal(got[0], eager(full)[0])
        torch.testing.assert_close(got[1], want[1], rtol=1e-3, atol=1e-3)


def test_attention_after_cached_keys_is_masked_attention():
    """The prefill after t0 cached keys: query i sees keys <= t0 + i, the query heads grouped onto
    their key head; the same numbers as SDPA with the explicit mask and repeated key heads."""
    from torch.nn import functional as F

    from components.recall.generative.fast_beam import _attention_after_past
    torch.manual_seed(0)
    b, t0, t, h, hkv, d = 3, 7, 4, 6, 2, 8
    q = torch.randn(b, t, h, d, dtype=torch.float64)
    k, v = torch.randn(b, hkv, t0 + t, d, dtype=torch.float64), torch.randn(b, hkv, t0 + t, d, dtype=torch.float64)
    mask = torch.ones(t, t0 + t, dtype=torch.bool).tril(t0)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.repeat_interleave(h // hkv, 1),
                                         v.repeat_interleave(h // hkv, 1), attn_mask=mask)   # [B, h, T, D]
    ref = ref.transpose(1, 2).flatten(2)                                                     # [B, T, h*D]
    torch.testing.assert_close(_attention_after_past(q, k, v, t0, last=False), ref)
    torch.testing.assert_close(_attention_after_past(q, k, v, t0, last=True), ref[:, -1:])
