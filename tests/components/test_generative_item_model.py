"""The item-level generative model: decoding stays in the catalogue, and beam scores are the
trie-normalised log-likelihood the model trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.recall.generative.beam import Trie
from components.recall.generative.item_model import (CodeTables, ItemGPT, item_beam_search, item_loss, item_rows,
                                                     item_target_nll, item_windows)
from components.recall.generative.model import GPTConfig
from tests.components.test_generative_recall import _random_catalogue as _catalogue
from tests.components.test_generative_recall import assert_decoded_in_catalogue


def _model(levels: int, k: int, seed: int, **kw) -> ItemGPT:
    torch.manual_seed(seed)
    return ItemGPT(GPTConfig(n_levels=levels, codebook_size=k, max_items=4, n_layer=1, n_head=2, d_model=16,
                             arch="items", **kw)).eval()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n_items=st.integers(1, 40), levels=st.integers(1, 3),
       beam=st.integers(1, 30), hist_len=st.integers(0, 6))
def test_decoding_never_returns_an_id_outside_the_catalogue(seed, n_items, levels, beam, hist_len):
    k = 4
    n_items = min(n_items, k ** levels)
    codes = _catalogue(seed, n_items, levels, k)
    codes[::7] = -1                                            # items without an id never come back
    tables = CodeTables.build(codes, Trie.build(codes, k))
    model = _model(levels, k, seed, item_embedding=seed % 2 == 0, n_items=n_items)
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(item_rows([rng.integers(0, n_items, size=hist_len) for _ in range(3)], codes, 4))
    items, scores = item_beam_search(model, rows, tables, beam)
    assert_decoded_in_catalogue(items, scores, codes, beam)


def test_beam_scores_are_the_training_log_likelihood_and_sum_to_one():
    k, levels = 4, 3
    codes = _catalogue(3, 20, levels, k)
    tables = CodeTables.build(codes, Trie.build(codes, k))
    model = _model(levels, k, 3)
    hist = [np.array([3, 7, 1]), np.array([5])]
    rows = torch.from_numpy(item_rows(hist, codes, 4))
    items, scores = item_beam_search(model, rows, tables, beam=64)
    for r, h in enumerate(hist):
        got = {i: v for i, v in zip(items[r].tolist(), scores[r].tolist()) if i >= 0}
        assert set(got) == set(range(len(codes)))
        assert sum(np.exp(v) for v in got.values()) == pytest.approx(1.0, abs=1e-4)
        for item in range(len(codes)):
            row = torch.from_numpy(item_rows([np.append(h, item)], codes, 5))
            with torch.no_grad():
                whole = -float(item_loss(model, row, tables))        # the history's items, then this one
            assert whole == pytest.approx(_prefix_ll(model, h, codes, tables) + got[item], abs=1e-4)
            assert item_target_nll(model, row.numpy(), tables) == pytest.approx(-got[item], abs=1e-4)


def _prefix_ll(model, hist, codes, tables) -> float:
    """Log-likelihood of the history's own items (item_loss scores every position of a row)."""
    if len(hist) == 0:
        return 0.0
    with torch.no_grad():
        return -float(item_loss(model, torch.from_numpy(item_rows([hist], codes, 5)), tables))


def test_windows_make_every_item_after_the_first_a_target_once():
    codes = _catalogue(0, 30, 2, 8)
    seq = np.arange(25)
    rows = item_windows([seq], codes, 4)                       # windows of 5 items from the newest end
    targets = np.concatenate([r[2:][r[2:] > 0] - 2 for r in rows])
    assert sorted(targets.tolist()) == list(range(1, 25))
    assert rows.shape[1] == 1 + 5 and np.all(rows[:, 0] == 1)
