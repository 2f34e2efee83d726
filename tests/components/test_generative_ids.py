"""Semantic ids: unique per item, sane metrics, ids for items arriving later, embedding sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.typedconf import ConfigError
from components.recall.generative.embeddings import collaborative_embeddings, item_embeddings, sequential_embeddings
from components.recall.generative.quantize import QuantizerConfig, fit_quantizer
from components.recall.generative.semantic_ids import build_semantic_ids


def _clustered(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d))
    return (centres[rng.integers(6, size=n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_every_item_gets_a_unique_id(method, one_thread):
    emb = _clustered(200)
    # Few codes per level so that prefixes collide and the unique level has work to do.
    ids = build_semantic_ids(emb, QuantizerConfig(method=method, levels=2, codebook_size=4, epochs=30,
                                                  reset_every=10))
    assert ids.codes.shape == (200, 3)
    assert len(np.unique(ids.codes, axis=0)) == 200
    assert ids.codes.min() >= 0 and ids.codes[:, :-1].max() < 4
    assert ids.codes[:, -1].max() < ids.unique_size
    m = ids.metrics(emb)
    assert m["collision_rate"] > 0                       # 16 prefixes for 200 items must collide
    assert m["items_per_prefix_max"] == ids.codes[:, -1].max() + 1
    assert 0 < m["utilisation_level0"] <= 1 and m["reconstruction_loss"] >= 0


def test_dead_code_reset_keeps_codebooks_in_use(one_thread):
    emb = _clustered(300, seed=1)
    ids = build_semantic_ids(emb, QuantizerConfig(levels=2, codebook_size=16, epochs=60, reset_every=20))
    m = ids.metrics(emb)
    assert m["utilisation_level0"] >= 0.75 and m["utilisation_level1"] >= 0.75


def test_new_items_get_ids_from_content_without_refitting():
    emb = _clustered(120, seed=2)
    ids = build_semantic_ids(emb[:100], QuantizerConfig(method="rqkmeans", levels=2, codebook_size=8),
                             unique_slack=2)
    before = ids.codes.copy()
    new = ids.add_items(emb[100:])
    assert np.array_equal(ids.codes[:100], before)
    got = new[new[:, 0] >= 0]
    assert len(got) > 0
    assert len(np.unique(ids.codes[ids.codes[:, 0] >= 0], axis=0)) == (ids.codes[:, 0] >= 0).sum()
    # An item with the same content as a known one lands in that item's prefix.
    twin = ids.add_items(emb[:1])
    if twin[0, 0] >= 0:
        assert np.array_equal(twin[0, :-1], before[0, :-1])


def test_collaborative_embeddings_put_co_occurring_items_together():
    rng = np.random.default_rng(0)
    # Items 0-9 appear together, 10-19 together; 20 never appears.
    seqs = [rng.permutation(10)[:5] + 10 * (u % 2) for u in range(200)]
    emb = collaborative_embeddings(seqs, 21, dim=4)
    sim = emb @ emb.T
    assert sim[0, 1:10].mean() > sim[0, 10:20].mean()
    assert np.allclose(emb[20], 0)


def test_sequential_embeddings_put_items_a_next_item_model_scores_alike_together(one_thread):
    rng = np.random.default_rng(0)
    # Users browse either items 0-9 or items 10-19, never both; 20 never appears.
    seqs = [rng.permutation(10)[:6] + 10 * (u % 2) for u in range(300)]
    emb = sequential_embeddings(seqs, 21, dim=8, epochs=80)
    sim = emb @ emb.T
    same = np.mean([sim[i, j] for i in range(20) for j in range(20) if i != j and i // 10 == j // 10])
    cross = np.mean([sim[i, j] for i in range(20) for j in range(20) if i // 10 != j // 10])
    assert same > cross + 0.5
    assert np.allclose(emb[20], 0) and np.allclose(np.linalg.norm(emb[:20], axis=1), 1, atol=1e-5)
    again = [sequential_embeddings(seqs, 21, dim=8, epochs=3) for _ in range(2)]
    assert np.array_equal(*again)                                                  # one seed, one result


def test_embedding_source_errors_name_the_setting():
    with pytest.raises(ConfigError, match="generative.embedding"):
        item_embeddings("pixels", content=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="titles"):
        item_embeddings("text", content=np.zeros((2, 2)), titles=None)


def test_one_seed_gives_the_same_ids_however_many_threads_torch_has():
    # With two threads the RQ-VAE's backward accumulated in a varying order, so a campaign's ids
    # (and everything downstream) changed from run to run.
    x = np.random.default_rng(0).standard_normal((1200, 16)).astype(np.float32)
    cfg = QuantizerConfig(method="rqvae", levels=3, codebook_size=64, epochs=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fits = [fit_quantizer(x, cfg, seed=0) for _ in range(3)]
    finally:
        torch.set_num_threads(threads)
    for other in fits[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(fits[0].codebooks, other.codebooks))
        assert all(np.array_equal(fits[0].encoder[k], other.encoder[k]) for k in fits[0].encoder)
    assert torch.get_num_threads() == threads


def test_the_commitment_weight_beta_is_the_one_configured():
    from components.recall.generative.quantize import RQVAE

    torch.manual_seed(0)
    x = torch.randn(64, 12)
    losses = {}
    for beta in (0.0, 0.25, 1.0):
        vae = RQVAE(12, QuantizerConfig(levels=2, codebook_size=8, latent_dim=4, hidden=16, beta=beta), 8)
        torch.manual_seed(1)                    # the same weights for every beta
        for p in vae.parameters():
            torch.nn.init.normal_(p)
        losses[beta] = float(vae(x)[2])
    commit = losses[1.0] - losses[0.0]          # the loss is linear in beta: the commitment term
    assert commit > 0
    assert losses[0.25] == pytest.approx(losses[0.0] + 0.25 * commit, rel=1e-5)
