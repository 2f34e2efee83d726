"""The Amazon Beauty protocol, shared by every offline benchmark on that file.

Protocol (../shared/data/amazon-beauty/README.md): leave-one-out per user (last item = test
target, second-to-last = validation target, the rest = training history), at most the 20 most
recent items as model input, the target ranked against the whole catalogue, Recall@K and NDCG@K
averaged over all users.

Ids: the file numbers users and items from 1; here items are 0-based (`item - 1`), so they index
arrays directly, and are written back 1-based in the top-10 file.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_INPUT = 20
KS = (5, 10)


class BeautyDataError(ValueError):
    """The data file does not have the expected `user item item ...` shape."""


@dataclass(frozen=True)
class Split:
    """Leave-one-out split of every user's time-ordered sequence (0-based item ids)."""

    user_ids: np.ndarray          # [U] the file's user ids (1-based)
    train: list[np.ndarray]       # per user: every item but the last two, in time order
    valid: np.ndarray             # [U] second-to-last item
    test: np.ndarray              # [U] last item
    n_items: int

    def inputs(self, stage: str = "test", max_len: int = MAX_INPUT) -> np.ndarray:
        """Model input [U, max_len]: the most recent items newest first, -1 padded.

        For `test` the input is train + valid (everything before the target); for `valid`, train.
        """
        if stage not in ("test", "valid"):
            raise ValueError(f"stage must be 'test' or 'valid', got {stage!r}")
        out = np.full((len(self.train), max_len), -1, np.int64)
        for u, seq in enumerate(self.train):
            full = np.append(seq, self.valid[u]) if stage == "test" else seq
            recent = full[::-1][:max_len]
            out[u, : len(recent)] = recent
        return out

    def targets(self, stage: str = "test") -> np.ndarray:
        return self.test if stage == "test" else self.valid

    def history(self, stage: str = "test") -> list[np.ndarray]:
        """All items a user interacted with before the target (to remove from the ranking)."""
        return [np.append(s, self.valid[u]) if stage == "test" else s for u, s in enumerate(self.train)]

    def train_clicks(self, upto: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every user's sequence as a click log: user row [N], item [N], order [N].

        `upto="train"`: the training part only (all but the last two items); `upto="test"`: also
        the validation item, i.e. everything before the test targets, which the protocol allows
        when ranking the test item (no user's test item is in it). The order is the position in
        the user's sequence, so sorting by (user, order) restores it.
        """
        if upto not in ("train", "test"):
            raise ValueError(f"upto must be 'train' or 'test', got {upto!r}")
        seqs = self.train if upto == "train" else self.history("test")
        users = np.concatenate([np.full(len(s), u, np.int64) for u, s in enumerate(seqs)])
        items = np.concatenate(seqs).astype(np.int64)
        order = np.concatenate([np.arange(len(s), dtype=np.int64) for s in seqs])
        return users, items, order


def load(path: Path) -> Split:
    """Read `user item item ...` lines (items in time order) and split each user leave-one-out."""
    user_ids, train, valid, test = [], [], [], []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BeautyDataError(f"--data: cannot read {path}: {exc}") from None
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            ids = [int(p) for p in parts]
        except ValueError:
            raise BeautyDataError(f"{path}:{n}: expected integers 'user item item ...', got {line[:60]!r}") from None
        if len(ids) < 4:
            raise BeautyDataError(f"{path}:{n}: user {ids[0]} has {len(ids) - 1} items; leave-one-out needs 3+")
        seq = np.asarray(ids[1:], np.int64) - 1
        user_ids.append(ids[0])
        train.append(seq[:-2])
        valid.append(seq[-2])
        test.append(seq[-1])
    if not user_ids:
        raise BeautyDataError(f"{path}: no users")
    n_items = int(max(max(int(s.max(initial=-1)) for s in train), max(valid), max(test))) + 1
    return Split(np.asarray(user_ids), train, np.asarray(valid), np.asarray(test), n_items)


def rank_of_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all items: [B, I], [B] -> [B].

    Ties count against the target (items with an equal score rank ahead of it), so a model
    that scores everything alike gets no credit for it.
    """
    t = scores[np.arange(len(target)), target][:, None]                             # [B, 1]
    return (scores > t).sum(axis=1) + (scores == t).sum(axis=1) - 1


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall@K (the target is in the top K) and NDCG@K (1 / log2(rank + 2) when it is)."""
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return out


ScoreFn = Callable[[np.ndarray], np.ndarray]   # user rows [B] -> scores [B, I] over all items


def evaluate(split: Split, score: ScoreFn, stage: str = "test", batch: int = 1024,
             exclude_history: bool = True, topk: int = 10) -> tuple[dict[str, float], np.ndarray]:
    """Full ranking for every user: metrics averaged over all users and each user's top-`topk`.

    Items the user already interacted with are excluded (set to -inf) when `exclude_history`,
    except the target itself when it is a repeat. Returns (metrics, top [U, topk] 0-based item ids).
    """
    targets, history = split.targets(stage), split.history(stage)
    ranks = np.empty(len(targets), np.int64)
    top = np.empty((len(targets), topk), np.int64)
    for lo in range(0, len(targets), batch):
        rows = np.arange(lo, min(lo + batch, len(targets)))
        s = np.asarray(score(rows), np.float64).copy()                               # [B, I]
        if s.shape != (len(rows), split.n_items):
            raise ValueError(f"score function returned {s.shape}, expected {(len(rows), split.n_items)}")
        if exclude_history:
            # A repeat purchase keeps its target: only the other history items are removed.
            at = np.arange(len(rows)), targets[rows]
            keep = s[at]
            r = np.concatenate([np.full(len(history[u]), i) for i, u in enumerate(rows)])
            c = np.concatenate([history[u] for u in rows])
            s[r, c] = -np.inf
            s[at] = keep
        ranks[rows] = rank_of_target(s, targets[rows])
        part = np.argpartition(-s, topk - 1, axis=1)[:, :topk]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        top[rows] = np.take_along_axis(part, order, axis=1)
    return metrics_from_ranks(ranks), top


def write_topk(path: Path, split: Split, top: np.ndarray) -> None:
    """One line a user: `user_id item item ...` in the file's own (1-based) ids, best first."""
    lines = [" ".join([str(u), *(str(int(i) + 1) for i in row)]) for u, row in zip(split.user_ids, top)]
    Path(path).write_text("\n".join(lines) + "\n")
