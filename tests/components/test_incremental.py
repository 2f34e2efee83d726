"""Intra-day updates: an incremental arm's ranker id rows, popularity and item-CF move with the stream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.typedconf import ConfigError, from_mapping
from components.ranking import DeepFMConfig, DeepFMRanker
from components.ranking.base import serving_features
from components.recall import ItemCFRecaller, PopularRecaller
from components.serving import ArmConfig, Pipeline, build_pipelines
from components.serving.config import IncrementalConfig
from components.serving.incremental import IntradayUpdater

ARM = ArmConfig(channels={"popular": 4, "itemcf": 4}, fine="deepfm", incremental=IncrementalConfig(every=2))


def _pipeline(make_train_data, taste_samples) -> Pipeline:
    data = make_train_data([(u, (u * 5 + k) % 8, 0) for u in range(20) for k in range(3)], day=0)
    ranker = DeepFMRanker(DeepFMConfig(epochs=1, min_count=1, hash_buckets=4)).fit(taste_samples)
    return Pipeline(ARM, 4, {"popular": PopularRecaller().fit(data), "itemcf": ItemCFRecaller().fit(data)}, ranker)


def _stream(pipe: Pipeline, make_users, micro: int):
    """One served micro-batch whose users click items 10 and 11 (never clicked in training) wherever shown."""
    users = make_users(range(6), recent=[[u % 8] for u in range(6)])
    items = np.tile(np.array([10, 11, 3, 5]), (6, 1))
    x = serving_features(users, items)
    return users, items, x, np.isin(items, [10, 11])


def _state(pipe: Pipeline):
    return ([p.detach().clone() for p in pipe.ranker.id_parameters()], pipe.channels["popular"].scores_.copy(),
            pipe.channels["itemcf"].sim_.toarray().copy())


def test_models_change_within_the_day_every_k_micro_batches_and_serving_uses_them(
        make_train_data, taste_samples, make_users, one_thread):
    pipe = _pipeline(make_train_data, taste_samples)
    up = IntradayUpdater(ARM.incremental, pipe)
    probe = make_users([0, 1], recent=[[2], [4]])
    before, served = _state(pipe), pipe.serve(probe)
    merged_before = set(pipe.recall_and_merge(probe)[1].ravel().tolist())
    assert up.before(0) is None                        # the day's first micro-batch: nothing seen yet
    up.observe(*_stream(pipe, make_users, 0))
    assert up.before(1) is None                        # still the first window of every=2 micro-batches
    timing = up.before(2)                              # a new window: the update runs
    assert timing is not None and timing.micro_batch == 2 and timing.impressions == 24 and timing.clicks == 12
    assert timing.total_ms >= timing.ranker_ms > 0
    rows, pop, sim = _state(pipe)
    assert any(not torch.equal(a, b) for a, b in zip(before[0], rows))
    assert pop[10] > 0 and pop[11] > 0 and before[1][10] == 0      # today's clicks joined popularity
    assert sim[2, 10] > 0 and before[2][2, 10] == 0                   # and item-CF: 2 -> 10 co-clicked today
    others = [p for p in pipe.ranker.net_.parameters() if all(p is not q for q in pipe.ranker.id_parameters())]
    assert all(p.requires_grad for p in others)                       # frozen only during the update
    after = pipe.serve(probe)
    assert {10, 11} <= set(pipe.recall_and_merge(probe)[1].ravel().tolist()) and not {10, 11} & merged_before
    assert {10, 11} & set(after.items.ravel().tolist()) and not {10, 11} & set(served.items.ravel().tolist())
    assert up.before(3) is None                        # nothing new observed: no update


def test_the_same_stream_gives_the_same_models(make_train_data, taste_samples, make_users, one_thread):
    states = []
    for _ in range(2):
        pipe = _pipeline(make_train_data, taste_samples)
        up = IntradayUpdater(ARM.incremental, pipe)
        for m in range(6):
            up.before(m)
            up.observe(*_stream(pipe, make_users, m))
        states.append(_state(pipe))
    (ra, pa, sa), (rb, pb, sb) = states
    assert all(torch.equal(a, b) for a, b in zip(ra, rb))
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(sa, sb)


def test_an_incremental_arm_gets_its_own_copies_of_the_models(make_train_data, taste_samples, tmp_path):
    pipe = _pipeline(make_train_data, taste_samples)
    for name, model in [*pipe.channels.items(), ("deepfm", pipe.ranker)]:
        model.save(tmp_path / name)
    daily = ArmConfig(channels={"popular": 4, "itemcf": 4}, fine="deepfm")
    pipes = build_pipelines({"daily": daily, "copy": daily, "incremental": ARM}, 4, tmp_path)
    assert pipes["daily"].ranker is pipes["copy"].ranker                    # shared as before
    assert pipes["incremental"].ranker is not pipes["daily"].ranker
    assert pipes["incremental"].channels["popular"] is not pipes["daily"].channels["popular"]


def test_incremental_knobs_are_checked_as_read():
    with pytest.raises(ConfigError, match="incremental.lr"):
        from_mapping(IncrementalConfig, {"every": 4, "lr": 0}, "incremental")
    assert not IncrementalConfig().enabled and IncrementalConfig(every=4).enabled
