"""The writer's lock on a campaign's data directory, and clearing it (story/campaign.py holds the rest)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from components.lake import LakeError

LOCK = "campaign.lock"


class CampaignBusyError(LakeError):
    """Another process is writing to the campaign's data directory."""


_held: dict[str, list[int]] = {}        # lock file -> [fd, depth] for locks this process holds
_held_guard = threading.Lock()


@contextmanager
def exclusive(data_dir: str | Path) -> Iterator[bool]:
    """Hold the data directory's writer lock; yields True when this call took it (not re-entered).

    It is an OS lock (flock) on `campaign.lock`, so the kernel releases it when the process ends,
    however it ends: a killed campaign never leaves a stale lock. Re-entrant within a process, as
    a campaign's flows nest; the descriptor is not inherited by child processes (Prefect's server).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = str((data_dir / LOCK).resolve())
    with _held_guard:
        first = key not in _held
        if first:
            _held[key] = [_take(key, data_dir), 0]
        _held[key][1] += 1
    try:
        yield first
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                fd = _held.pop(key)[0]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def holds_lock(data_dir: str | Path) -> bool:
    return str((Path(data_dir) / LOCK).resolve()) in _held


def _take(key: str, data_dir: Path) -> int:
    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(os.pread(fd, 4096, 0))
        os.close(fd)
        raise CampaignBusyError(
            f"{data_dir} is in use by another reclab process ({holder}); wait for it to finish or "
            f"stop it, or use another --data-dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:300]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd


def _describe_holder(raw: bytes) -> str:
    try:
        h = json.loads(raw.decode())
        return f"pid {h['pid']} on host {h['host']}, started {h['started']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its name yet"


def _release_mlflow_engines(db: Path) -> None:
    """Close this process's pooled connections to a local MLflow database about to be deleted.

    MLflow keeps one SQLAlchemy engine per database URI, and one store object per URI, for the life
    of the process; taking the lock already opened them (recovery looks for orphaned runs), and
    they would go on writing to the deleted file ('readonly database') or skip creating the new
    file's tables ('no such table'): `campaign --fresh` on an existing campaign failed so.
    """
    import sys

    for module, cls in (("mlflow.tracking._tracking_service.registry", "TrackingStoreRegistry"),
                        ("mlflow.tracking._model_registry.registry", "ModelRegistryStoreRegistry")):
        cached = getattr(getattr(sys.modules.get(module), cls, None), "_get_store_with_resolved_uri", None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    uri = f"sqlite:///{db.resolve()}"
    for module in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
                   "mlflow.store.jobs.sqlalchemy_store"):
        store = getattr(sys.modules.get(module), "SqlAlchemyStore", None)
        engine = getattr(store, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()


def clear_data_dir(data_dir: str | Path) -> None:
    """Delete everything in `data_dir` but the lock file; the caller must hold the lock."""
    data_dir = Path(data_dir)
    if not holds_lock(data_dir):
        raise RuntimeError(f"clearing {data_dir} needs its lock")
    _release_mlflow_engines(data_dir / "mlflow.db")
    for path in data_dir.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
