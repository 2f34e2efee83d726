"""Histories as semantic-id tokens, and the next-token training loop."""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from components.recall.generative.model import BOS, GPT, PAD, SPECIAL, prefix_mask

log_ = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    max_seconds: float = 0.0   # stop after this much training time (0: no limit)
    patience: int = 0          # with a validation set: stop after this many epochs without improvement (0: never)
    bucket_by_length: bool = True   # batch rows of similar length (less padding: faster on the CPU)
    select_by: str = "recall"  # with validation data, keep the epoch with the best "recall" (@10) or "nll"


@dataclass
class TrainLog:
    """Mean training loss per epoch; with a validation set, its score per epoch (lower is better) and
    the epoch whose weights were kept (1-based)."""

    losses: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    best_epoch: int = 0


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


def level_loss(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the real tokens of right-padded rows x [B, T] (BOS + items),
    each token scored among its own level's codes (the choice beam search makes at that step)."""
    pos, mask = prefix_mask(x)
    h, _ = model.hidden(x[:, :-1], pos[:, :-1], mask[:, :, :-1, :-1])                # [B, T-1, C]
    n_levels, k = model.config.n_levels, model.config.codebook_size
    total = h.new_zeros(())
    for level in range(n_levels):
        # Output j predicts token j + 1, which is at level j % L because row = BOS + L tokens an item.
        target = x[:, 1 + level:: n_levels]                                          # [B, T_l]
        target = torch.where(target == PAD, -100, target - (SPECIAL + level * k))
        logits = model.level_logits(h[:, level:: n_levels], level)                   # [B, T_l, K]
        total = total + F.cross_entropy(logits.reshape(-1, k), target.reshape(-1), ignore_index=-100,
                                        reduction="sum")
    return total


def target_nll(model: GPT, rows: np.ndarray, batch: int = 512) -> float:
    """Mean negative log-likelihood of each row's last item (its last L real tokens) given the tokens
    before it: rows [N, T] right-padded BOS + history + target. The cheap validation score."""
    model.eval()
    dev = next(model.parameters()).device
    n_levels, k = model.config.n_levels, model.config.codebook_size
    x_all = torch.from_numpy(rows)
    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(rows), batch):
            x = x_all[lo: lo + batch].to(dev)                                        # [B, T]
            pos, mask = prefix_mask(x)
            h, _ = model.hidden(x, pos, mask)                                        # [B, T, C]
            start = (x != PAD).sum(1) - n_levels                                     # [B] first target token
            for level in range(n_levels):
                at = (start + level)[:, None]                                        # [B, 1]
                hl = h.gather(1, (at - 1)[:, :, None].expand(-1, -1, h.shape[2]))[:, 0]  # [B, C]
                logp = torch.log_softmax(model.level_logits(hl, level).float(), -1)  # [B, K]
                code = x.gather(1, at)[:, 0] - (SPECIAL + level * k)                 # [B]
                total -= float(logp.gather(1, code[:, None]).sum())
    return total / max(len(rows), 1)


def train_gpt(model: torch.nn.Module, data: np.ndarray, cfg: TrainConfig, seed: int = 0,
              validate: Callable[[torch.nn.Module], float] | None = None,
              loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = level_loss) -> TrainLog:
    """Next-token cross-entropy over every real position of data [N, T] (right-padded with 0,
    a leading start token; loss_fn gives a batch's summed loss).

    With `validate` (model -> score, lower is better) the model is scored after every epoch and
    ends with the weights of its best epoch, so the number of epochs is picked on validation data.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_all = torch.from_numpy(data)
    lengths = (x_all != PAD).sum(1)
    per_batch = float((lengths - 1).clamp(min=0).sum()) / max(1, -(-len(data) // cfg.batch_size))  # targets a batch
    per_epoch = max(1, -(-len(data) // cfg.batch_size))
    plan = {"epochs": cfg.epochs}
    warmup = max(1, cfg.epochs * per_epoch // 10)

    def lr_factor(step: int) -> float:
        # Linear warm-up over the first tenth, then cosine decay to zero at the planned last step.
        total = plan["epochs"] * per_epoch
        return min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, step + 1 - warmup)
                                                                         / max(1, total - warmup)))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    log, best, start = TrainLog(), None, time.perf_counter()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        if epoch > plan["epochs"]:
            break
        perm = torch.randperm(len(data), generator=gen)
        if cfg.bucket_by_length:
            # Rows of similar length batched together (shuffled within a length, batches in random
            # order), so a batch is trimmed to little more than its rows.
            perm = perm[torch.argsort(lengths[perm], stable=True)]
        batches = list(torch.split(perm, cfg.batch_size))
        total, count = 0.0, 0
        for b in torch.randperm(len(batches), generator=gen).tolist():
            batch = batches[b]
            x = x_all[batch, : int(lengths[batch].max())].to(dev)                    # [B, T] trimmed
            # Divided by the mean tokens of a batch, not this batch's: every token weighs the same,
            # else the tokens of batches of short rows (the first items of sequences) would weigh more.
            loss = loss_fn(model, x) / per_batch
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total, count = total + loss.item() * per_batch, count + int((x[:, 1:] != PAD).sum())
        log.losses.append(total / max(count, 1))
        if validate is not None:
            log.valid.append(validate(model))
            log_.info("epoch %d: train loss %.4f, valid %.4f, %.0f s", epoch, log.losses[-1], log.valid[-1],
                      time.perf_counter() - start)
            model.train()
            if log.valid[-1] <= min(log.valid):
                best, log.best_epoch = copy.deepcopy(model.state_dict()), epoch
            elif cfg.patience and epoch - log.best_epoch >= cfg.patience:
                break
        elapsed = time.perf_counter() - start
        if cfg.max_seconds and epoch == 1:
            # Under a time budget the cosine ends at the last epoch that fits, judged by the first one,
            # rather than being cut off at a high learning rate.
            plan["epochs"] = max(1, min(cfg.epochs, int(cfg.max_seconds / elapsed)))
            log_.info("time budget %.0f s: %d epochs planned at %.0f s an epoch", cfg.max_seconds,
                      plan["epochs"], elapsed)
        if cfg.max_seconds and elapsed > cfg.max_seconds:
            break
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return log
