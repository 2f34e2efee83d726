"""FP8 (e4m3) weights for the decoder's matrix products, scaled per output row.

On CUDA a product is `torch._scaled_mm`: the activations are cast to e4m3 with one scale per row
(their absolute maximum / 448, so one large history token does not crush the others' precision),
the weights were cast once with one scale per output channel, and the tensor cores accumulate in
float32 and write bf16. Elsewhere (the CPU) the same rounding is emulated in float32: the numbers
FP8 gives, not its speed, so agreement can be checked on any machine.

`Fp8Recipe` says which projections are cast: e4m3 keeps 3 mantissa bits, and the ones whose error
moves the beam most (measured on the trained model by bench/gpu_train.py) can stay in bf16 at the
cost of their share of the speed-up; `fast_accum` is Hopper's faster FP8 accumulation (partial sums
kept in the tensor core's own precision instead of being promoted to float32 as they go).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from common.typedconf import ConfigError

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
KINDS = ("qkv", "o", "gate_up", "down")   # a decoder layer's four projection matrices


@dataclass(frozen=True)
class Fp8Weight:
    data: torch.Tensor    # [N, K] e4m3
    scale: torch.Tensor   # [1, N] float32: weight row n = data[n] * scale[0, n]
    fast_accum: bool = False

    @property
    def shape(self) -> torch.Size:
        return self.data.shape


@dataclass(frozen=True)
class Fp8Recipe:
    """keep: projection kinds (KINDS) left in the native dtype in every layer; keep_layers: layers
    left wholly native (negative counts from the end); fast_accum: see the module docstring."""

    keep: frozenset = frozenset()
    keep_layers: tuple = ()
    fast_accum: bool = False

    def __post_init__(self) -> None:
        if set(self.keep) - set(KINDS):
            raise ConfigError(f"Fp8Recipe keep={sorted(self.keep)}: allowed {', '.join(KINDS)}")

    @classmethod
    def parse(cls, text: str) -> "Fp8Recipe":
        """"" (every projection in e4m3), or comma-separated parts: "keep=down+o", "layers=0+-1",
        "fast"; e.g. "keep=down,layers=-1,fast"."""
        keep, layers, fast = set(), [], False
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name == "keep" and value:
                keep |= set(value.split("+"))
            elif name == "layers" and value:
                try:
                    layers += [int(x) for x in value.split("+")]
                except ValueError:
                    raise ConfigError(f"Fp8Recipe {text!r}: layers takes integers, e.g. layers=0+-1") from None
            elif part == "fast":
                fast = True
            else:
                raise ConfigError(f"Fp8Recipe {text!r}: unknown part {part!r}; use keep=KIND+KIND, layers=I+J, fast")
        return cls(frozenset(keep), tuple(layers), fast)

    def casts(self, kind: str, layer: int, n_layers: int) -> bool:
        """Whether this layer's projection of this kind goes to e4m3."""
        return kind not in self.keep and layer not in {i % n_layers for i in self.keep_layers}

    def label(self) -> str:
        parts = ([f"keep={'+'.join(k for k in KINDS if k in self.keep)}"] if self.keep else []) + \
                ([f"layers={'+'.join(map(str, self.keep_layers))}"] if self.keep_layers else []) + \
                (["fast"] if self.fast_accum else [])
        return ",".join(parts) or "all"


def quantize(w: torch.Tensor, fast_accum: bool = False) -> Fp8Weight:
    """w [N, K] -> e4m3 rows scaled so each row's largest magnitude maps to 448."""
    amax = w.detach().float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12)      # [N, 1]
    scale = amax / E4M3_MAX
    return Fp8Weight((w.float() / scale).to(E4M3), scale.T.contiguous(), fast_accum)


def _rows_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> e4m3 [M, K] and per-row scales [M, 1] float32."""
    scale = x.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / E4M3_MAX    # [M, 1]
    return (x.float() / scale).to(E4M3), scale


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a plain weight [N, K] or an Fp8Weight; x [..., K] -> [..., N] in x's dtype."""
    if not isinstance(w, Fp8Weight):
        return F.linear(x, w, bias)
    lead = x.shape[:-1]
    xq, sx = _rows_e4m3(x.reshape(-1, x.shape[-1]))                                # [M, K], [M, 1]
    if x.is_cuda:
        # mat2 must be column-major: the [N, K] row-major weight transposed is exactly that.
        y = torch._scaled_mm(xq, w.data.t(), scale_a=sx, scale_b=w.scale, out_dtype=x.dtype,
                             use_fast_accum=w.fast_accum)                          # [M, N]
    else:   # float32 sums of the e4m3 values: fast_accum's lower-precision sums are not emulated
        y = ((xq.float() * sx) @ (w.data.float() * w.scale.T).T).to(x.dtype)        # [M, N]
    if bias is not None:
        y = y + bias
    return y.view(*lead, y.shape[-1])
