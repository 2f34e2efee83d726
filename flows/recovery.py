"""Taking over a campaign's data directory, and cleaning up after a process that died in it."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows import tracking
from flows.campaign_state import exclusive
from story.campaign import MANIFEST, open_campaign


@contextmanager
def claim(data_dir: str | Path) -> Iterator[None]:
    """Hold the data directory's lock; on first taking it, recover from whoever held it before.

    Every flow writes under this claim, so two processes never write one lake, and the lock's
    previous holder, if it left anything half-done, is known to be dead.
    """
    with exclusive(data_dir) as first:
        if first:
            recover(Path(data_dir))
        yield


def recover(data_dir: Path) -> dict[str, int]:
    """Remove a killed writer's temporary files and model folders, and mark its MLflow runs FAILED."""
    if not (data_dir / MANIFEST).is_file():
        return {"temp_files": 0, "runs": 0}
    c = open_campaign(data_dir)
    temp = c.lake.remove_temp_files()
    models = c.models_dir(0).parent
    staged = [p for p in models.iterdir() if p.name.startswith(".")] if models.is_dir() else []
    for path in staged:          # .staging-day=N, .old-day=N: a publish cut short
        shutil.rmtree(path, ignore_errors=True)
    temp += staged
    runs = tracking.fail_orphaned_runs(c)
    return {"temp_files": len(temp), "runs": len(runs)}
