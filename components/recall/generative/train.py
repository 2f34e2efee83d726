"""Histories as semantic-id tokens, and the next-token training loop."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from components.recall.generative.model import BOS, GPT, PAD, SPECIAL, prefix_mask


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_seconds: float = 0.0   # stop after this much training time (0: no limit)


def item_tokens(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """codes [I, L] -> the item's tokens [I, L]: level l's code c is SPECIAL + l * K + c."""
    return codes + SPECIAL + np.arange(codes.shape[1]) * codebook_size


def history_tokens(histories: Sequence[np.ndarray], tokens: np.ndarray, max_items: int,
                   left_pad: bool) -> np.ndarray:
    """Chronological item histories -> [B, 1 + max_items * L] BOS + item tokens, padded with PAD.

    Items without an id (token rows < SPECIAL) are skipped; only the last max_items are kept.
    """
    n_levels = tokens.shape[1]
    width = 1 + max_items * n_levels
    out = np.full((len(histories), width), PAD, np.int64)
    for i, hist in enumerate(histories):
        hist = np.asarray(hist, np.int64)
        hist = hist[(hist >= 0) & (hist < len(tokens))]
        toks = tokens[hist]
        toks = toks[toks[:, 0] >= SPECIAL][-max_items:].ravel()
        row = np.concatenate([[BOS], toks])
        if left_pad:
            out[i, width - len(row):] = row
        else:
            out[i, : len(row)] = row
    return out


def training_sequences(sequences: Sequence[np.ndarray], tokens: np.ndarray, max_items: int) -> np.ndarray:
    """Users' chronological item sequences cut into windows of max_items + 1 from the newest end:
    every item after the first of a window is a next-item target. -> [N, 1 + (max_items + 1) * L]."""
    windows = []
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        seq = seq[tokens[seq, 0] >= SPECIAL]
        for end in range(len(seq), 1, -max_items):
            windows.append(seq[max(0, end - max_items - 1): end])
    return history_tokens(windows, tokens, max_items + 1, left_pad=False)


def train_gpt(model: GPT, data: np.ndarray, cfg: TrainConfig, seed: int = 0) -> list[float]:
    """Next-token cross-entropy over every real position of data [N, T]; returns the loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_all = torch.from_numpy(data)
    lengths = (x_all != PAD).sum(1)
    steps_total = cfg.epochs * max(1, -(-len(data) // cfg.batch_size))
    warmup = max(1, steps_total // 10)
    # Linear warm-up over the first tenth, then cosine decay to zero, whatever the number of steps.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min((step + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, step + 1 - warmup) / max(1, steps_total - warmup))))))
    losses, start = [], time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for lo in range(0, len(data), cfg.batch_size):
            batch = perm[lo: lo + cfg.batch_size]
            x = x_all[batch, : int(lengths[batch].max())].to(dev)                    # [B, T] trimmed
            pos, mask = prefix_mask(x)
            logits, _ = model(x[:, :-1], pos[:, :-1], mask[:, :, :-1, :-1])          # [B, T-1, V]
            target = x[:, 1:]                                                        # [B, T-1]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        losses.append(total / max(count, 1))
        if cfg.max_seconds and time.perf_counter() - start > cfg.max_seconds:
            break
    model.eval()
    return losses
