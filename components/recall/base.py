"""What every recall channel shares: the protocol and explicit, pickle-free state files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from components.types import Candidates, TrainData, UserBatch


class Recaller(Protocol):
    name: str

    def fit(self, data: TrainData) -> Self: ...

    def recall(self, users: UserBatch, k: int) -> Candidates: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> Self: ...


class ModelFileError(RuntimeError):
    """A saved model is missing or unreadable."""


def why(exc: BaseException) -> str:
    """An exception in one line: its type and its message's first line (torch.load's run to pages)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def write_state(path: Path, config: dict[str, Any], **arrays: np.ndarray) -> None:
    """Save a model as config.json + arrays.npz in `path` (a directory); no pickles."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    np.savez(path / "arrays.npz", **arrays)


def read_state(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        config = json.loads((path / "config.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"cannot load model from {path}: {exc}; re-run training for that day") from None
    return config, arrays
