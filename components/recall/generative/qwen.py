"""A Qwen2-style decoder-only transformer for semantic-id generation, sized by config from a CPU toy
up to the Qwen2-1.5B shape that JD serves (hidden 1536, 28 layers, 12 query / 2 key-value heads,
MLP 8960, vocabulary 151,936 with the semantic-id tokens inside it).

Kept beside `model.GPT` rather than grown out of it: GPT is the small trainable CPU model with its own
token layout (2 + level * K + code) and LayerNorm / learned positions / GELU; this one follows Qwen2
on every axis (RMSNorm, rotary positions, grouped-query attention, SwiGLU, biased q/k/v) and names its
modules as `transformers`' Qwen2ForCausalLM does, so that a Qwen2 state dict loads into it unchanged
and both decoders run on the same weights. Level l's code c is token `sid_offset + l * K + c`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from common.typedconf import ConfigError
from components.recall.base import why


@dataclass(frozen=True)
class QwenConfig:
    vocab_size: int = 320
    sid_offset: int = 200          # first semantic-id token; levels follow one another from here
    n_levels: int = 4
    codebook_size: int = 16
    hidden: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int = 2
    intermediate: int = 128
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.sid_offset + self.n_levels * self.codebook_size > self.vocab_size:
            raise ConfigError("QwenConfig.sid_offset + n_levels * codebook_size must be <= vocab_size")
        if self.hidden % self.n_head or self.n_head % self.n_kv_head:
            raise ConfigError("QwenConfig.hidden must divide by n_head, and n_head by n_kv_head")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head

    def level_tokens(self, level: int) -> tuple[int, int]:
        """[lo, hi) token range of one level's codes."""
        lo = self.sid_offset + level * self.codebook_size
        return lo, lo + self.codebook_size

    @classmethod
    def qwen2_1p5b(cls) -> "QwenConfig":
        """Qwen2-1.5B's shape; the 4 x 256 semantic-id tokens sit inside its 151,936-token vocabulary."""
        return cls(vocab_size=151_936, sid_offset=150_000, n_levels=4, codebook_size=256, hidden=1536,
                   n_layer=28, n_head=12, n_kv_head=2, intermediate=8960)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2's RMSNorm: normalised in float32, cast back, then scaled."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rope_tables(pos: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """pos [B, T] -> cos, sin [B, 1, T, D] (halves repeated, as Qwen2's rotate-half layout wants)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)  # [D/2]
    freqs = pos.float()[..., None] * inv                                               # [B, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]                                   # [B, 1, T, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, h, T, D] rotated by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)                      # [B, h, T, D]
    return x * cos + rotated * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        d = cfg.head_dim
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.hidden, cfg.n_head * d)
        self.k_proj = nn.Linear(cfg.hidden, cfg.n_kv_head * d)
        self.v_proj = nn.Linear(cfg.hidden, cfg.n_kv_head * d)
        self.o_proj = nn.Linear(cfg.n_head * d, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, C], mask [B, 1, T, T] bool (True = may attend) -> [B, T, C]."""
        cfg, (b, t, _) = self.cfg, x.shape
        q = self.q_proj(x).view(b, t, cfg.n_head, cfg.head_dim).transpose(1, 2)       # [B, h, T, D]
        k = self.k_proj(x).view(b, t, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)    # [B, hkv, T, D]
        v = self.v_proj(x).view(b, t, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)    # [B, hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = cfg.n_head // cfg.n_kv_head
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)   # [B, h, T, D]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                   # [B, h, T, D]
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))                       # [B, T, C]


class MLP(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))           # SwiGLU


class DecoderLayer(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps)


class QwenLM(nn.Module):
    """Reference forward without a cache: the simple path the fast decoder is checked against."""

    def __init__(self, cfg: QwenConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, idx: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, T] (left-padded where key_valid [B, T] is False) -> logits [B, T, V]."""
        cfg, (b, t) = self.config, idx.shape
        valid = torch.ones_like(idx, dtype=torch.bool) if key_valid is None else key_valid   # [B, T]
        pos = (valid.cumsum(1) - 1).clamp(min=0)                                       # [B, T]
        causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()          # [T, T]
        eye = torch.eye(t, dtype=torch.bool, device=idx.device)
        mask = ((causal & valid[:, None, :]) | eye)[:, None]                           # [B, 1, T, T]
        x = self.model.embed_tokens(idx)                                               # [B, T, C]
        cos, sin = rope_tables(pos, cfg.head_dim, cfg.rope_theta, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.model.norm(x))                                        # [B, T, V]


def save_checkpoint(path, model: QwenLM, codes) -> None:
    """The model, its config and the catalogue's semantic ids [I, L] in one file (no pickled code)."""
    import dataclasses
    torch.save({"config": dataclasses.asdict(model.config), "state": model.state_dict(),
                "codes": torch.as_tensor(codes, dtype=torch.long)}, path)


def load_checkpoint(path) -> tuple[QwenLM, torch.Tensor]:
    """-> the model (float32, eval) and the catalogue's codes [I, L]."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = QwenLM(QwenConfig(**blob["config"]))
        model.load_state_dict(blob["state"])
    except Exception as exc:   # unreadable, unpicklable, or another model's state: one line, whatever it was
        raise ConfigError(f"checkpoint {path}: cannot be read as a QwenLM checkpoint ({why(exc)})") from None
    return model.eval(), blob["codes"]
