"""FP8 (e4m3) weights for the decoder's matrix products, scaled per output row.

On CUDA a product is `torch._scaled_mm`: the activations are cast to e4m3 with one scale per row
(their absolute maximum / 448, so one large history token does not crush the others' precision),
the weights were cast once with one scale per output channel, and the tensor cores accumulate in
float32 and write bf16. Elsewhere (the CPU) the same rounding is emulated in float32: the numbers
FP8 gives, not its speed, so agreement can be checked on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


@dataclass(frozen=True)
class Fp8Weight:
    data: torch.Tensor    # [N, K] e4m3
    scale: torch.Tensor   # [1, N] float32: weight row n = data[n] * scale[0, n]

    @property
    def shape(self) -> torch.Size:
        return self.data.shape


def quantize(w: torch.Tensor) -> Fp8Weight:
    """w [N, K] -> e4m3 rows scaled so each row's largest magnitude maps to 448."""
    amax = w.detach().float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12)      # [N, 1]
    scale = amax / E4M3_MAX
    return Fp8Weight((w.float() / scale).to(E4M3), scale.T.contiguous())


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
        y = torch._scaled_mm(xq, w.data.t(), scale_a=sx, scale_b=w.scale, out_dtype=x.dtype)  # [M, N]
    else:
        y = ((xq.float() * sx) @ (w.data.float() * w.scale.T).T).to(x.dtype)        # [M, N]
    if bias is not None:
        y = y + bias
    return y.view(*lead, y.shape[-1])
