"""Constrained beam search for `QwenLM` built for the GPU, and the plain reference it must agree with.

The fast path: q/k/v and gate/up projections packed into one matrix each; the history is prefilled
once per user (flash attention when rows are unpadded), and the beams then attend to that one shared
prefix cache plus their own few generated keys (cascade attention: the prefix is never copied per
beam); only the last history position goes through the last layer's MLP; each level's logits come
from the 256 head rows of that level's codes instead of the whole 150k vocabulary; invalid codes are
masked through the trie's dense tables (`beam.Trie`). Everything has static shapes and never syncs
with the host, so `CudaGraphSearch` captures the whole search (prefill and the 3 decode steps) in
one CUDA graph per batch size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from common.typedconf import ConfigError
from components.recall.generative.beam import Trie
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


def _qkv_fn(x, ln1, w_qkv, b_qkv, cos, sin, h: int, hkv: int, d: int, eps: float):
    """x [B, T, C] -> q [B, h, T, D], k, v [B, hkv, T, D] with rotary positions applied."""
    b, t, _ = x.shape
    qkv = F.linear(rms_norm(x, ln1, eps), w_qkv, b_qkv)                               # [B, T, (h+2hkv)D]
    q, k, v = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
    q = apply_rope(q.view(b, t, h, d).transpose(1, 2), cos, sin)                     # [B, h, T, D]
    k = apply_rope(k.view(b, t, hkv, d).transpose(1, 2), cos, sin)                   # [B, hkv, T, D]
    return q, k, v.view(b, t, hkv, d).transpose(1, 2)


def _mlp_fn(x, attn, w_o, ln2, w_gu, w_down, eps: float):
    """Attention output projection, residual, then the SwiGLU MLP and its residual: x [B, T, C]."""
    x = x + F.linear(attn, w_o)                                                       # [B, T, C]
    gate, up = F.linear(rms_norm(x, ln2, eps), w_gu).chunk(2, dim=-1)                 # 2 x [B, T, F]
    return x + F.linear(F.silu(gate) * up, w_down)                                    # [B, T, C]


def _prefill_layer(x, cos, sin, mask, last: bool, ln1, w_qkv, b_qkv, w_o, ln2, w_gu, w_down,
                   h: int, hkv: int, d: int, eps: float, qkv_fn, mlp_fn):
    """One layer over the whole history x [B, T, C] -> x (only the last position when `last`), and
    this layer's k, v [B, hkv, T, D] for the cache."""
    q, k, v = qkv_fn(x, ln1, w_qkv, b_qkv, cos, sin, h, hkv, d, eps)
    kx = k[:, :, None].expand(-1, -1, h // hkv, -1, -1).flatten(1, 2)                # [B, h, T, D]
    vx = v[:, :, None].expand(-1, -1, h // hkv, -1, -1).flatten(1, 2)
    if last:
        # Only the last position feeds the logits: its query alone sees every key.
        x, q = x[:, -1:], q[:, :, -1:]
        mask = None if mask is None else mask[:, :, -1:]
    if mask is None:
        y = F.scaled_dot_product_attention(q, kx, vx, is_causal=not last)           # [B, h, T, D]
    else:
        y = F.scaled_dot_product_attention(q, kx, vx, attn_mask=mask)
    return mlp_fn(x, y.transpose(1, 2).flatten(2), w_o, ln2, w_gu, w_down, eps), k, v


def _decode_layer(x, cos, sin, pk, pv, sk, sv, key_valid, ln1, w_qkv, b_qkv, w_o, ln2, w_gu, w_down,
                  h: int, hkv: int, d: int, eps: float, qkv_fn, mlp_fn):
    """One layer for one new token per beam, x [B, W, C]: cascade attention over the shared prefix
    (pk, pv [B, hkv, T, D]) and the beam's own generated keys (sk, sv [B, W, hkv, S, D])."""
    b, w, _ = x.shape
    group = h // hkv
    q, k, v = qkv_fn(x, ln1, w_qkv, b_qkv, cos, sin, h, hkv, d, eps)                 # [B, h|hkv, W, D]
    k, v = k.transpose(1, 2)[:, :, :, None], v.transpose(1, 2)[:, :, :, None]        # [B, W, hkv, 1, D]
    sk, sv = torch.cat([sk, k], dim=3), torch.cat([sv, v], dim=3)                    # [B, W, hkv, S+1, D]
    qg = q.view(b, hkv, group, w, d).transpose(2, 3) * d ** -0.5                     # [B, hkv, W, g, D]
    s_pre = qg.flatten(2, 3) @ pk.transpose(2, 3)                                    # [B, hkv, W*g, T]
    if key_valid is not None:
        s_pre = s_pre.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    s_suf = torch.einsum("bkwgd,bwksd->bkwgs", qg, sk).flatten(2, 3)                 # [B, hkv, W*g, S+1]
    p = torch.softmax(torch.cat([s_pre, s_suf], dim=-1).float(), dim=-1).to(x.dtype)
    p_pre, p_suf = p.split([pk.shape[2], sk.shape[3]], dim=-1)
    y = p_pre @ pv + torch.einsum("bkwgs,bwksd->bkwgd", p_suf.unflatten(2, (w, group)), sv).flatten(2, 3)  # [B, hkv, W*g, D]
    y = y.unflatten(2, (w, group)).permute(0, 2, 1, 3, 4).reshape(b, w, -1)         # [B, W, h*D]
    return mlp_fn(x, y, w_o, ln2, w_gu, w_down, eps), k, v


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
    """The model's weights packed for decoding on one device in one dtype (bf16 on the GPU)."""

    def __init__(self, model: QwenLM, trie: Trie, beam: int, device: torch.device | str, dtype: torch.dtype,
                 compile: str = "none"):
        cfg = self.cfg = model.config
        if compile not in ("none", "pieces", "layers"):
            raise ConfigError(f"FastBeamSearch compile={compile!r}: allowed none, pieces, layers")
        # torch.compile fuses the norms, rotary, SiLU-gate and residuals around the matrix products
        # ("pieces"), or whole layers with the attention's reshapes and copies too ("layers").
        pieces = compile == "pieces"
        self._qkv_impl = torch.compile(_qkv_fn, dynamic=True) if pieces else _qkv_fn
        self._mlp_impl = torch.compile(_mlp_fn, dynamic=True) if pieces else _mlp_fn
        layers = compile == "layers"
        self._prefill_layer = torch.compile(_prefill_layer, dynamic=True) if layers else _prefill_layer
        self._decode_layer = torch.compile(_decode_layer, dynamic=True) if layers else _decode_layer
        self.beam, self.device, self.dtype = beam, torch.device(device), dtype
        put = lambda t: t.detach().to(self.device, dtype)  # noqa: E731
        self.layers = []
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                put(layer.input_layernorm.weight),
                put(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])),
                put(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])),
                put(a.o_proj.weight), put(layer.post_attention_layernorm.weight),
                put(torch.cat([m.gate_proj.weight, m.up_proj.weight])), put(m.down_proj.weight)))
        self.embed = put(model.model.embed_tokens.weight)                             # [V, C]
        self.norm = put(model.model.norm.weight)                                       # [C]
        self.heads = [put(model.lm_head.weight[slice(*cfg.level_tokens(lv))]) for lv in range(cfg.n_levels)]  # L x [K, C]
        self.children = [c.to(self.device) for c in trie.children]

    def _layer_args(self, lw: _Layer) -> tuple:
        cfg = self.cfg
        return (lw.ln1, lw.w_qkv, lw.b_qkv, lw.w_o, lw.ln2, lw.w_gu, lw.w_down,
                cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.rms_eps, self._qkv_impl, self._mlp_impl)

    def prefill(self, idx: torch.Tensor, key_valid: torch.Tensor | None):
        """idx [B, T] -> final hidden of the last position [B, C] and per-layer (k, v) [B, hkv, T, D]."""
        cfg, (b, t) = self.cfg, idx.shape
        if key_valid is None:
            pos, mask = torch.arange(t, device=idx.device).expand(b, t), None          # [B, T]
        else:
            pos = (key_valid.cumsum(1) - 1).clamp(min=0)
            causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()
            mask = ((causal & key_valid[:, None, :]) | torch.eye(t, dtype=torch.bool, device=idx.device))[:, None]
        x = self.embed[idx]                                                            # [B, T, C]
        cos, sin = rope_tables(pos, cfg.head_dim, cfg.rope_theta, self.dtype)
        cache = []
        for i, lw in enumerate(self.layers):
            x, k, v = self._prefill_layer(x, cos, sin, mask, i + 1 == len(self.layers), *self._layer_args(lw))
            cache.append((k, v))
        return rms_norm(x[:, -1], self.norm, cfg.rms_eps), cache

    def _decode(self, tok, pos, prefix, suffix, key_valid):
        """One token per beam. tok, pos [B, W]; prefix per layer (k, v) [B, hkv, T, D] shared by the
        beams; suffix per layer (k, v) [B, W, hkv, S, D] of the tokens generated so far (S may be 0).
        Returns the final hidden [B, W, C] and this token's per-layer (k, v) [B, W, hkv, 1, D]."""
        x = self.embed[tok]                                                             # [B, W, C]
        cos, sin = rope_tables(pos, self.cfg.head_dim, self.cfg.rope_theta, self.dtype)  # [B, 1, W, D]
        new = []
        for lw, (pk, pv), (sk, sv) in zip(self.layers, prefix, suffix):
            x, k, v = self._decode_layer(x, cos, sin, pk, pv, sk, sv, key_valid, *self._layer_args(lw))
            new.append((k, v))
        return rms_norm(x, self.norm, self.cfg.rms_eps), new

    @torch.no_grad()
    def __call__(self, history: torch.Tensor, key_valid: torch.Tensor | None = None):
        """history [B, T] token ids (left-padded where key_valid is False) -> items [B, beam] (-1 where
        fewer valid ids) and log-probability scores [B, beam], best first."""
        cfg, b = self.cfg, history.shape[0]
        hidden, prefix = self.prefill(history, key_valid)                              # [B, C]
        lengths = history.shape[1] if key_valid is None else key_valid.sum(1, keepdim=True)  # [B, 1]
        rows = torch.arange(b, device=history.device)[:, None]
        node = torch.zeros(b, 1, dtype=torch.long, device=history.device)
        score = torch.zeros(b, 1, device=history.device)
        empty = prefix[0][0].new_zeros(b, 1, cfg.n_kv_head, 0, cfg.head_dim)
        suffix = [(empty, empty)] * cfg.n_layer
        logits = F.linear(hidden, self.heads[0])[:, None]                              # [B, 1, K]
        for level in range(cfg.n_levels):
            score, parent, code, node = select_step(logits, node, score, self.children[level], self.beam)
            if level + 1 == cfg.n_levels:
                return torch.where(torch.isfinite(score), node, torch.full_like(node, -1)), score
            suffix = [(sk[rows, parent], sv[rows, parent]) for sk, sv in suffix]       # [B, W', hkv, S, D]
            tok = cfg.level_tokens(level)[0] + code                                    # [B, W']
            hidden, new = self._decode(tok, lengths + level + torch.zeros_like(tok), prefix, suffix, key_valid)
            suffix = [(torch.cat([sk, k], 3), torch.cat([sv, v], 3)) for (sk, sv), (k, v) in zip(suffix, new)]
            logits = F.linear(hidden, self.heads[level + 1])                           # [B, W', K]
        raise AssertionError("unreachable: the config has at least one level")


class CudaGraphSearch:
    """The whole search for one batch shape of unpadded histories captured as one CUDA graph: a call
    copies the histories in and replays it, with no per-kernel launch cost from Python."""

    def __init__(self, search: FastBeamSearch, batch: int, length: int, warmup: int = 2):
        self.idx = torch.randint(search.cfg.sid_offset, search.cfg.vocab_size, (batch, length), device=search.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                search(self.idx)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.items, self.scores = search(self.idx)

    def __call__(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.idx.copy_(history)
        self.graph.replay()
        return self.items, self.scores
