"""The recall stage's thread-pool option: same slates as serial, the slowest channel sets the time."""
from __future__ import annotations

import time

import numpy as np

from components.serving import ArmConfig, Pipeline
from components.types import Candidates, pad_rows


class SleepyRecaller:
    """A stub channel that takes `seconds` (sleep releases the GIL, as torch and numpy do)."""

    def __init__(self, items, seconds):
        self.items, self.seconds = list(items), seconds

    def recall(self, users, k):
        time.sleep(self.seconds)
        items = pad_rows([np.asarray(self.items, np.int64)] * len(users), k, -1, np.int64)
        return Candidates(items=items, scores=np.where(items >= 0, 1.0, 0.0).astype(np.float32))


def test_parallel_recall_matches_serial_and_takes_the_slowest_channel(make_users):
    channels = {"a": SleepyRecaller([1, 2, 3], 0.2), "b": SleepyRecaller([4, 5, 6], 0.2)}
    users = make_users([0, 1], recent=[[2], []])
    serial = Pipeline(ArmConfig(channels={"a": 3, "b": 3}), 4, channels, None).serve(users)
    parallel = Pipeline(ArmConfig(channels={"a": 3, "b": 3}, parallel_recall=True), 4, channels, None).serve(users)
    assert np.array_equal(serial.items, parallel.items) and serial.channels == parallel.channels
    assert set(parallel.channel_ms) == {"a", "b"} and min(parallel.channel_ms.values()) >= 200
    # Side by side, the stage lasts about one channel's 200 ms, serially at least both.
    assert serial.timings_ms["recall"] >= 400
    assert parallel.timings_ms["recall"] < serial.timings_ms["recall"]
