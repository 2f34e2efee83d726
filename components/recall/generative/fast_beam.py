"""Constrained beam search for `QwenLM` built for the GPU, and the plain reference it must agree with.

The fast path: q/k/v and gate/up projections packed into one matrix each; the history is prefilled
once per user (flash attention reading the 2 key/value heads for all 12 query heads, enable_gqa, no
repeat), keys and values written once in the cache layout [B, hkv, T, D] that both attentions read in
place; the beams then attend to that one shared prefix cache plus their own few generated keys
(cascade attention with the query heads grouped onto their key head: nothing is copied per beam);
only the last history position goes through the last layer's MLP; each level's logits come from the
256 head rows of that level's codes instead of the whole 150k vocabulary; invalid codes are masked
through the trie's dense tables (`beam.Trie`). A prefill may start after `past` keys of the same
user's earlier history (`kv_cache`); its few new queries then attend by grouped products compiled
with the layer (`_attention_after_past`) rather than flash attention with a mask. Everything has static shapes and never syncs with the host, so
`CudaGraphSearch` captures the whole search (prefill and the 3 decode steps) in one CUDA graph per
batch size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from common.typedconf import ConfigError
from components.recall.generative.beam import Trie
from components.recall.generative.fp8 import Fp8Recipe, linear, quantize
from components.recall.generative.qwen import QwenLM, apply_rope, rms_norm, rope_tables


def select_step(logits: torch.Tensor, node: torch.Tensor, score: torch.Tensor, children: torch.Tensor, beam: int):
    """One level of beam selection. logits [B, W, K], node/score [B, W] -> score, parent, code, node [B, W']."""
    b, w, k = logits.shape
    child = children[node]                                                          # [B, W, K]
    invalid = child < 0
    # A beam with no valid continuation gives NaN here; masking again turns it into -inf.
    logp = torch.log_softmax(logits.float().masked_fill(invalid, float("-inf")), dim=-1).masked_fill(invalid, float("-inf"))
    total = (score[:, :, None] + logp).view(b, w * k)                                # [B, W*K]
    score, flat = total.topk(min(beam, w * k), dim=1)                                # [B, W']
    node = child.view(b, w * k).gather(1, flat)                                      # [B, W']
    node = torch.where(torch.isfinite(score), node, torch.zeros_like(node))
    return score, flat // k, flat % k, node


@torch.no_grad()
def reference_beam_search(model: QwenLM, history: torch.Tensor, trie: Trie, beam: int,
                          key_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """No cache, no sharing, the full vocabulary head: every step re-runs the whole sequence of every
    beam. history [B, T] -> items [B, beam] (-1 where fewer valid ids), scores [B, beam]."""
    cfg, (b, t) = model.config, history.shape
    valid = torch.ones_like(history, dtype=torch.bool) if key_valid is None else key_valid
    seq, seq_valid = history[:, None, :], valid[:, None, :]                          # [B, 1, T]
    node = torch.zeros(b, 1, dtype=torch.long, device=history.device)
    score = torch.zeros(b, 1, device=history.device)
    rows = torch.arange(b, device=history.device)[:, None]
    for level in range(cfg.n_levels):
        w = seq.shape[1]
        logits = model(seq.reshape(b * w, -1), seq_valid.reshape(b * w, -1))[:, -1]  # [B*W, V]
        lo, hi = cfg.level_tokens(level)
        score, parent, code, node = select_step(logits[:, lo:hi].view(b, w, -1), node, score,
                                                trie.children[level], beam)
        if level + 1 == cfg.n_levels:
            return torch.where(torch.isfinite(score), node, torch.full_like(node, -1)), score
        seq = torch.cat([seq[rows, parent], (lo + code)[:, :, None]], dim=2)         # [B, W', T+level+1]
        seq_valid = torch.cat([seq_valid[rows, parent], torch.ones_like(code, dtype=torch.bool)[:, :, None]], 2)
    raise AssertionError("unreachable: the config has at least one level")


def _qkv_fn(x, cos, sin, ln1, w_qkv, b_qkv, h: int, hkv: int, d: int, eps: float):
    """x [B, T, C], cos/sin [B, T, 1, D] -> q [B, T, h, D] (token-major, as flash attention reads it)
    and k, v [B, hkv, T, D]: the cache layout, which prefill and decode attention both read in place."""
    b, t, _ = x.shape
    qkv = linear(rms_norm(x, ln1, eps), w_qkv, b_qkv)                                 # [B, T, (h+2hkv)D]
    q, k, v = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
    q = apply_rope(q.view(b, t, h, d), cos, sin)                                      # [B, T, h, D]
    k = apply_rope(k.view(b, t, hkv, d), cos, sin).transpose(1, 2).contiguous()       # [B, hkv, T, D]
    return q, k, v.view(b, t, hkv, d).transpose(1, 2).contiguous()


def _mlp_fn(x, attn, w_o, ln2, w_gu, w_down, eps: float):
    """Attention output projection, residual, then the SwiGLU MLP and its residual: x [B, T, C]."""
    x = x + linear(attn, w_o)                                                       # [B, T, C]
    gate, up = linear(rms_norm(x, ln2, eps), w_gu).chunk(2, dim=-1)                   # 2 x [B, T, F]
    return x + linear(F.silu(gate) * up, w_down)                                    # [B, T, C]


def _attention(q, k, v, mask, last: bool):
    """q [B, T, h, D], k/v [B, hkv, Tk, D], mask None (plain causal) or bool [B|1, 1, T, Tk] -> [B, T', h*D]
    (T' = 1 when `last`). enable_gqa lets flash attention read the hkv heads without repeating them."""
    q = q.transpose(1, 2)                                                             # [B, h, T, D] (a view)
    if last:
        # Only the last position feeds the logits: its query alone sees every key.
        q, mask = q[:, :, -1:], None if mask is None else mask[:, :, -1:]
    if mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=not last, enable_gqa=True)  # [B, h, T', D]
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return y.transpose(1, 2).flatten(2)                                               # [B, T', h*D]


def _attention_after_past(q, k, v, t0: int, last: bool):
    """Attention of the T new queries of a prefill that follows t0 cached keys: q [B, T, h, D], k/v
    [B, hkv, t0+T, D] -> [B, T', h*D] (T' = 1 when `last`). New query i sees the cached keys and new
    keys <= i. A few queries against a short history: plain products with the query heads grouped
    onto their key head (as the decode step does), compiled with the layer; flash attention with a
    boolean mask cost more here than the arithmetic (one launch of a general kernel per layer)."""
    b, t, h, d = q.shape
    hkv = k.shape[1]
    group = h // hkv
    if last:   # only the last position feeds the logits, and it sees every key: no mask
        q, t = q[:, -1:], 1
    qg = q.reshape(b, t, hkv, group, d).permute(0, 2, 1, 3, 4).reshape(b, hkv, t * group, d) * d ** -0.5
    s = qg @ k.transpose(2, 3)                                                        # [B, hkv, T*g, t0+T]
    if not last:
        row = torch.arange(t * group, device=q.device) // group                       # query position of each row
        s = s.masked_fill(torch.arange(k.shape[2], device=q.device)[None, :] > t0 + row[:, None], float("-inf"))
    y = torch.softmax(s.float(), dim=-1).to(v.dtype) @ v                               # [B, hkv, T*g, D]
    return y.reshape(b, hkv, t, group, d).permute(0, 2, 1, 3, 4).reshape(b, t, h * d)


def _decode_layer(x, cos, sin, pk, pv, sk, sv, key_valid, ln1, w_qkv, b_qkv, w_o, ln2, w_gu, w_down,
                  h: int, hkv: int, d: int, eps: float):
    """One layer for one new token per beam, x [B, W, C]: cascade attention over the shared prefix
    (pk, pv [B, hkv, T, D]) and the beam's own generated keys (sk, sv [B, W, hkv, S, D]); the query
    heads are grouped onto their key head, so nothing is repeated or copied per beam."""
    b, w, _ = x.shape
    group = h // hkv
    q, k, v = _qkv_fn(x, cos, sin, ln1, w_qkv, b_qkv, h, hkv, d, eps)                # [B, W, h, D], [B, hkv, W, D]
    k, v = k.transpose(1, 2)[:, :, :, None], v.transpose(1, 2)[:, :, :, None]        # [B, W, hkv, 1, D]
    sk, sv = torch.cat([sk, k], dim=3), torch.cat([sv, v], dim=3)                    # [B, W, hkv, S+1, D]
    qg = q.view(b, w, hkv, group, d).transpose(1, 2) * d ** -0.5                     # [B, hkv, W, g, D]
    s_pre = qg.reshape(b, hkv, w * group, d) @ pk.transpose(2, 3)                    # [B, hkv, W*g, T]
    if key_valid is not None:
        s_pre = s_pre.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    s_suf = torch.einsum("bkwgd,bwksd->bkwgs", qg, sk).flatten(2, 3)                 # [B, hkv, W*g, S+1]
    p = torch.softmax(torch.cat([s_pre, s_suf], dim=-1).float(), dim=-1).to(x.dtype)
    p_pre, p_suf = p.split([pk.shape[2], sk.shape[3]], dim=-1)
    y = p_pre @ pv + torch.einsum("bkwgs,bwksd->bkwgd", p_suf.unflatten(2, (w, group)), sv).flatten(2, 3)  # [B, hkv, W*g, D]
    y = y.unflatten(2, (w, group)).transpose(1, 2).reshape(b, w, -1)                 # [B, W, h*D]
    return _mlp_fn(x, y, w_o, ln2, w_gu, w_down, eps), k, v


def _batch_dynamic(fn, n_activations: int):
    """torch.compile'd fn whose first n_activations tensor arguments vary in their leading (batch) size
    only: every other size, weights included, stays a constant, so the generated kernels index with
    constants instead of dividing by runtime sizes."""
    # Each decode step's key length and each warmed (history, cached) shape is one more
    # specialisation; past dynamo's default limit (8) a new one fell back or recompiled mid-traffic.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(fn)

    def call(*args):
        for a in args[:n_activations]:
            if isinstance(a, torch.Tensor):
                torch._dynamo.maybe_mark_dynamic(a, 0)
        return compiled(*args)
    return call


@dataclass(frozen=True)
class _Layer:
    ln1: torch.Tensor     # [C]
    w_qkv: torch.Tensor   # [(h + 2 hkv) D, C]
    b_qkv: torch.Tensor   # [(h + 2 hkv) D]
    w_o: torch.Tensor     # [C, h D]
    ln2: torch.Tensor     # [C]
    w_gu: torch.Tensor    # [2 F, C]
    w_down: torch.Tensor  # [C, F]


class FastBeamSearch:
    """The model's weights packed for decoding on one device in one dtype (bf16 on the GPU).
    weights="fp8": the projection matrices in e4m3 (`fp8`), those the recipe casts (a string for
    `Fp8Recipe.parse` or a recipe; default every one); embeddings, norms and the per-level heads stay
    in `dtype`."""

    def __init__(self, model: QwenLM, trie: Trie, beam: int, device: torch.device | str, dtype: torch.dtype,
                 compile: str = "none", weights: str = "native", fp8: Fp8Recipe | str = "", key_align: int = 1):
        cfg = self.cfg = model.config
        if key_align < 1:
            raise ConfigError(f"FastBeamSearch key_align={key_align}: need >= 1")
        # The decode steps read the history's keys padded (zero keys, masked) to a multiple of this:
        # at 150 keys the batched attention products run on 2-element-aligned kernels; at 152 on 8.
        self.key_align = key_align
        if compile not in ("none", "pieces"):
            raise ConfigError(f"FastBeamSearch compile={compile!r}: allowed none, pieces")
        if weights not in ("native", "fp8"):
            raise ConfigError(f"FastBeamSearch weights={weights!r}: allowed native, fp8")
        self.weights = weights
        self.fp8 = Fp8Recipe.parse(fp8) if isinstance(fp8, str) else fp8
        # torch.compile fuses the norms, rotary, SiLU-gate and residuals around the matrix products of
        # the prefill, and whole decode layers (their attention is small, many-kernel arithmetic).
        pieces = compile == "pieces"
        self._qkv = _batch_dynamic(_qkv_fn, 3) if pieces else _qkv_fn
        self._mlp = _batch_dynamic(_mlp_fn, 2) if pieces else _mlp_fn
        self._decode_layer = _batch_dynamic(_decode_layer, 8) if pieces else _decode_layer
        self._after_past = _batch_dynamic(_attention_after_past, 3) if pieces else _attention_after_past
        self.beam, self.device, self.dtype = beam, torch.device(device), dtype
        put = lambda t: t.detach().to(self.device, dtype)  # noqa: E731
        n = len(model.model.layers)

        def mat(t, kind: str, i: int):
            if weights == "fp8" and self.fp8.casts(kind, i, n):
                return quantize(put(t), self.fp8.fast_accum)
            return put(t)
        self.layers = []
        for i, layer in enumerate(model.model.layers):
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                put(layer.input_layernorm.weight),
                mat(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), "qkv", i),
                put(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])),
                mat(a.o_proj.weight, "o", i), put(layer.post_attention_layernorm.weight),
                mat(torch.cat([m.gate_proj.weight, m.up_proj.weight]), "gate_up", i), mat(m.down_proj.weight, "down", i)))
        self.embed = put(model.model.embed_tokens.weight)                             # [V, C]
        self.norm = put(model.model.norm.weight)                                       # [C]
        self.heads = [put(model.lm_head.weight[slice(*cfg.level_tokens(lv))]) for lv in range(cfg.n_levels)]  # L x [K, C]
        self.children = [c.to(self.device) for c in trie.children]

    def _dims(self) -> tuple:
        return self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim, self.cfg.rms_eps

    def prefill(self, idx: torch.Tensor, key_valid: torch.Tensor | None = None, past: list | None = None):
        """idx [B, T] -> final hidden of the last position [B, C] and per-layer (k, v) [B, hkv, T0+T, D].
        `past`: per-layer (k, v) [B, hkv, T0, D] of the T0 tokens before idx (unpadded rows), which are
        then not recomputed: the user's earlier history, encoded by an earlier request."""
        cfg, (b, t) = self.cfg, idx.shape
        t0 = 0 if past is None else past[0][0].shape[2]
        if past is not None and key_valid is not None:
            raise ValueError("FastBeamSearch.prefill: past keys need unpadded rows (key_valid=None)")
        mask = None
        if key_valid is not None:
            pos = (key_valid.cumsum(1) - 1).clamp(min=0)                              # [B, T]
            causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()
            mask = ((causal & key_valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=idx.device))[:, None]
        else:   # after past keys, new query i sees the T0 cached keys and new keys <= i (_attention_after_past)
            pos = torch.arange(t0, t0 + t, device=idx.device).expand(b, t)             # [B, T]
        x = self.embed[idx]                                                            # [B, T, C]
        cos, sin = (c.transpose(1, 2) for c in rope_tables(pos, cfg.head_dim, cfg.rope_theta, self.dtype))  # [B, T, 1, D]
        h, hkv, d, eps = self._dims()
        cache = []
        for i, lw in enumerate(self.layers):
            last = i + 1 == len(self.layers)
            q, k, v = self._qkv(x, cos, sin, lw.ln1, lw.w_qkv, lw.b_qkv, h, hkv, d, eps)
            if past is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)  # [B, hkv, T0+T, D]
                y = self._after_past(q, k, v, t0, last)                               # [B, T', h*D]
            else:
                y = _attention(q, k, v, mask, last)                                    # [B, T', h*D]
            x = self._mlp(x[:, -1:] if last else x, y, lw.w_o, lw.ln2, lw.w_gu, lw.w_down, eps)
            cache.append((k, v))
        return rms_norm(x[:, -1], self.norm, cfg.rms_eps), cache

    def _decode(self, tok, pos, prefix, sk, sv, key_valid):
        """One token per beam. tok, pos [B, W]; prefix per layer (k, v) [B, hkv, T, D] shared by the
        beams; sk, sv [L, B, W, hkv, S, D] the keys of the tokens generated so far (S may be 0).
        Returns the final hidden [B, W, C] and this token's keys and values [L, B, W, hkv, 1, D]."""
        x = self.embed[tok]                                                             # [B, W, C]
        cos, sin = (c.transpose(1, 2) for c in rope_tables(pos, self.cfg.head_dim, self.cfg.rope_theta, self.dtype))
        new_k, new_v = [], []
        for i, (lw, (pk, pv)) in enumerate(zip(self.layers, prefix)):
            x, k, v = self._decode_layer(x, cos, sin, pk, pv, sk[i], sv[i], key_valid, lw.ln1, lw.w_qkv, lw.b_qkv,
                                         lw.w_o, lw.ln2, lw.w_gu, lw.w_down, *self._dims())
            new_k.append(k)
            new_v.append(v)
        return rms_norm(x, self.norm, self.cfg.rms_eps), torch.stack(new_k), torch.stack(new_v)

    def _aligned(self, prefix: list, key_valid: torch.Tensor | None) -> tuple[list, torch.Tensor | None]:
        """The history's per-layer (k, v) [B, hkv, T, D] padded with zero keys to a multiple of key_align,
        and the key_valid [B, T'] that masks the padding (unchanged when T is already a multiple)."""
        b, t = prefix[0][0].shape[0], prefix[0][0].shape[2]
        pad = -t % self.key_align
        if not pad:
            return prefix, key_valid
        valid = key_valid if key_valid is not None else torch.ones(b, t, dtype=torch.bool, device=prefix[0][0].device)
        valid = torch.cat([valid, valid.new_zeros(b, pad)], dim=1)                     # [B, T + pad]
        return [(F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))) for k, v in prefix], valid

    @torch.no_grad()
    def __call__(self, history: torch.Tensor, key_valid: torch.Tensor | None = None, past: list | None = None):
        """history [B, T] token ids (left-padded where key_valid is False; only the tokens after `past`
        when given) -> items [B, beam] (-1 where fewer valid ids) and log-probability scores [B, beam]."""
        return self.search(history, key_valid, past)[:2]

    @torch.no_grad()
    def search(self, history: torch.Tensor, key_valid: torch.Tensor | None = None, past: list | None = None):
        """As __call__, also returning the per-layer (k, v) [B, hkv, T0+T, D] of the whole history."""
        cfg, b = self.cfg, history.shape[0]
        hidden, prefix = self.prefill(history, key_valid, past)                        # [B, C]
        t0 = 0 if past is None else past[0][0].shape[2]
        lengths = t0 + history.shape[1] if key_valid is None else key_valid.sum(1, keepdim=True)  # [B, 1]
        rows = torch.arange(b, device=history.device)[:, None]
        node = torch.zeros(b, 1, dtype=torch.long, device=history.device)
        score = torch.zeros(b, 1, device=history.device)
        # The generated tokens' keys of every layer in one tensor: one gather reorders all beams.
        sk = prefix[0][0].new_zeros(cfg.n_layer, b, 1, cfg.n_kv_head, 0, cfg.head_dim)  # [L, B, W, hkv, S, D]
        sv = sk
        keys, keys_valid = self._aligned(prefix, key_valid)                           # what the decode steps read
        logits = F.linear(hidden, self.heads[0])[:, None]                              # [B, 1, K]
        for level in range(cfg.n_levels):
            score, parent, code, node = select_step(logits, node, score, self.children[level], self.beam)
            if level + 1 == cfg.n_levels:
                return torch.where(torch.isfinite(score), node, torch.full_like(node, -1)), score, prefix
            sk, sv = sk[:, rows, parent], sv[:, rows, parent]                          # [L, B, W', hkv, S, D]
            tok = cfg.level_tokens(level)[0] + code                                    # [B, W']
            hidden, k, v = self._decode(tok, lengths + level + torch.zeros_like(tok), keys, sk, sv, keys_valid)
            sk, sv = torch.cat([sk, k], dim=4), torch.cat([sv, v], dim=4)              # [L, B, W', hkv, S+1, D]
            logits = F.linear(hidden, self.heads[level + 1])                           # [B, W', K]
        raise AssertionError("unreachable: the config has at least one level")


class CudaGraphSearch:
    """The whole search for one batch shape of unpadded histories (and, with past_length, that many
    cached tokens before them) captured as one CUDA graph: a call copies the inputs in and replays it,
    with no per-kernel launch cost from Python. `search` may be any callable of (idx, key_valid, past).
    The cached keys live in one static buffer, `past_kv` [batch, 2, L, hkv, past_length, D] (the search
    reads per-layer views of it): a caller may write a batch's prefixes straight into `past_kv[:n]`
    (`KVSlab.gather(..., out=)`, one copy of the data, one host call) instead of passing `past`.
    pool: a memory pool shared with other graphs (torch.cuda.graph_pool_handle()); safe only when they
    never replay concurrently and each replay's outputs are used up before another graph replays, since
    one graph's intermediates may then lie where another's outputs were."""

    def __init__(self, search, batch: int, length: int, past_length: int = 0, warmup: int = 2, pool=None):
        cfg, dev, dtype = search.cfg, search.device, search.dtype
        self.idx = torch.randint(cfg.sid_offset, cfg.vocab_size, (batch, length), device=dev)
        self.past_kv = (torch.zeros((batch, 2, cfg.n_layer, cfg.n_kv_head, past_length, cfg.head_dim),
                                    device=dev, dtype=dtype) if past_length else None)
        self.past = ([(self.past_kv[:, 0, i], self.past_kv[:, 1, i]) for i in range(cfg.n_layer)]
                     if past_length else None)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                search(self.idx, None, self.past)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = search(self.idx, None, self.past)

    def __call__(self, history: torch.Tensor, past: list | None = None):
        """history [n, T] with n <= the captured batch: a smaller batch rides in the first n rows (the
        others keep stale inputs, and rows never mix), and the outputs are sliced to n rows. `past`:
        per-layer (k, v) [n, hkv, past_length, D], copied in (or already written into past_kv[:n])."""
        n = history.shape[0]
        self.idx[:n].copy_(history)
        for (k, v), (pk, pv) in zip(self.past or [], past or []):
            k[:n].copy_(pk)
            v[:n].copy_(pv)
        self.graph.replay()
        if n == self.idx.shape[0]:
            return self.out
        return tuple(o[:n] if isinstance(o, torch.Tensor) else [(k[:n], v[:n]) for k, v in o] for o in self.out)
