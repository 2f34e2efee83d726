"""Residual quantisation of item embeddings: RQ-VAE (learned) and RQ-KMeans (cheaper)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class QuantizerConfig:
    method: str = "rqvae"         # "rqvae" or "rqkmeans"
    levels: int = 3               # quantised levels, before the level that makes ids unique
    codebook_size: int = 256      # codes per level (clamped to the number of items when fewer)
    latent_dim: int = 32          # RQ-VAE latent size
    hidden: int = 128             # RQ-VAE encoder/decoder width
    epochs: int = 300             # RQ-VAE full-batch steps
    lr: float = 1e-3
    beta: float = 0.25            # commitment weight
    reset_every: int = 50         # steps between dead-code resets (0: never)
    kmeans_iters: int = 25


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding: x [N, d] -> centres [k, d]."""
    n = x.shape[0]
    centres = x[torch.randint(n, (1,), generator=gen)]                              # [1, d]
    d2 = torch.cdist(x, centres).squeeze(1) ** 2                                     # [N]
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        nxt = x[torch.multinomial(p, 1, generator=gen)]                              # [1, d]
        centres = torch.cat([centres, nxt])
        d2 = torch.minimum(d2, (torch.cdist(x, nxt).squeeze(1)) ** 2)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)                                   # [N]
        sums = torch.zeros_like(centres).index_add_(0, assign, x)                    # [k, d]
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)                    # [k, 1]
        # An empty cluster keeps its centre; it will be reset by the caller if it stays dead.
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres


def residual_codes(z: torch.Tensor, codebooks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codeword level by level: z [N, e] -> codes [N, L], quantised sum [N, e]."""
    residual, quant, codes = z, torch.zeros_like(z), []
    for cb in codebooks:                                                             # cb [K, e]
        c = torch.cdist(residual, cb).argmin(1)                                      # [N]
        q = cb[c]                                                                    # [N, e]
        codes.append(c)
        quant = quant + q
        residual = residual - q
    return torch.stack(codes, 1), quant


class RQVAE(nn.Module):
    """MLP encoder -> residual quantiser over `levels` codebooks -> MLP decoder."""

    def __init__(self, in_dim: int, cfg: QuantizerConfig, k: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, in_dim))
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(k, cfg.latent_dim)) for _ in range(cfg.levels)])
        self.beta = cfg.beta

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, in] -> reconstruction [N, in], codes [N, L], loss []."""
        z = self.encoder(x)                                                          # [N, e]
        residual, quant, codes, vq_loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for cb in self.codebooks:
            c = torch.cdist(residual.detach(), cb.detach()).argmin(1)               # [N]
            q = cb[c]                                                                # [N, e]
            # Codebook moves to the residual; the encoder commits to the codebook (VQ-VAE loss).
            vq_loss = vq_loss + F.mse_loss(q, residual.detach()) + self.beta * F.mse_loss(residual, q.detach())
            codes.append(c)
            quant = quant + q
            residual = residual - q.detach()
        quant_st = z + (quant - z).detach()                                         # straight-through
        recon = self.decoder(quant_st)                                               # [N, in]
        return recon, torch.stack(codes, 1), F.mse_loss(recon, x) + vq_loss


@dataclass
class Quantizer:
    """A fitted quantiser: maps embeddings [N, in] to codes [N, L]; state is plain arrays."""

    config: QuantizerConfig
    codebooks: list[np.ndarray]             # L x [K, e]
    encoder: dict[str, np.ndarray]          # RQ-VAE encoder weights; empty for RQ-KMeans
    decoder: dict[str, np.ndarray]
    in_dim: int

    @property
    def codebook_size(self) -> int:
        return self.codebooks[0].shape[0]

    def _vae(self) -> RQVAE:
        vae = RQVAE(self.in_dim, self.config, self.codebook_size)
        state = {f"encoder.{k}": torch.from_numpy(v) for k, v in self.encoder.items()}
        state |= {f"decoder.{k}": torch.from_numpy(v) for k, v in self.decoder.items()}
        state |= {f"codebooks.{i}": torch.from_numpy(cb) for i, cb in enumerate(self.codebooks)}
        vae.load_state_dict(state)
        return vae

    def latent(self, x: np.ndarray) -> torch.Tensor:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        if self.config.method == "rqkmeans":
            return xt
        with torch.no_grad():
            return self._vae().encoder(xt)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """Codes of any items, also ones that arrived after fitting: [N, in] -> [N, L] int64."""
        with torch.no_grad():
            codes, _ = residual_codes(self.latent(x), [torch.from_numpy(c) for c in self.codebooks])
        return codes.numpy().astype(np.int64)

    def reconstruction_loss(self, x: np.ndarray) -> float:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        with torch.no_grad():
            z = self.latent(x)
            _, quant = residual_codes(z, [torch.from_numpy(c) for c in self.codebooks])
            recon = quant if self.config.method == "rqkmeans" else self._vae().decoder(quant)
        return float(F.mse_loss(recon, xt))


def fit_quantizer(x: np.ndarray, cfg: QuantizerConfig, seed: int = 0) -> Quantizer:
    """Fit RQ-VAE or RQ-KMeans on item embeddings x [N, in].

    On one thread: with two, the backward pass's accumulations ran in a different order from run
    to run, so one seed gave different ids (and a different campaign). The model is small enough
    that one thread costs little.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_quantizer(x, cfg, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_quantizer(x: np.ndarray, cfg: QuantizerConfig, seed: int) -> Quantizer:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))                      # [N, in]
    k = min(cfg.codebook_size, xt.shape[0])
    if cfg.method == "rqkmeans":
        residual, books = xt, []
        for _ in range(cfg.levels):
            cb = kmeans(residual, k, cfg.kmeans_iters, gen)                          # [K, in]
            residual = residual - cb[torch.cdist(residual, cb).argmin(1)]
            books.append(cb.numpy())
        return Quantizer(cfg, books, {}, {}, xt.shape[1])
    vae = RQVAE(xt.shape[1], cfg, k)
    with torch.no_grad():                                                            # k-means init, level by level
        residual = vae.encoder(xt)
        for cb in vae.codebooks:
            cb.copy_(kmeans(residual, k, cfg.kmeans_iters, gen))
            residual = residual - cb[torch.cdist(residual, cb).argmin(1)]
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    for step in range(1, cfg.epochs + 1):
        _, codes, loss = vae(xt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cfg.reset_every and step % cfg.reset_every == 0 and step < cfg.epochs:
            _reset_dead_codes(vae, xt, codes, gen)
    return Quantizer(cfg, [cb.detach().numpy().copy() for cb in vae.codebooks],
                     {k_: v.detach().numpy().copy() for k_, v in vae.encoder.state_dict().items()},
                     {k_: v.detach().numpy().copy() for k_, v in vae.decoder.state_dict().items()}, xt.shape[1])


def _reset_dead_codes(vae: RQVAE, xt: torch.Tensor, codes: torch.Tensor, gen: torch.Generator) -> None:
    """Against codebook collapse: a code no item uses is moved onto a random item's residual."""
    with torch.no_grad():
        residual = vae.encoder(xt)                                                   # [N, e]
        for level, cb in enumerate(vae.codebooks):
            used = torch.bincount(codes[:, level], minlength=cb.shape[0]) > 0        # [K]
            dead = (~used).nonzero().squeeze(1)
            if len(dead):
                pick = torch.randint(xt.shape[0], (len(dead),), generator=gen)
                cb[dead] = residual[pick] + 1e-3 * torch.randn(len(dead), cb.shape[1], generator=gen)
            residual = residual - cb[torch.cdist(residual, cb).argmin(1)]
