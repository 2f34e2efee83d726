"""Item vectors served from a FAISS index: exact for small catalogues, HNSW or IVF for large ones."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import faiss


@dataclass(frozen=True)
class IndexConfig:
    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    exact_max_items: int = 50_000   # "auto" stays exact (IndexFlatIP) up to this many items, then HNSW
    hnsw_m: int = 32                # graph degree
    hnsw_ef_search: int = 128       # candidates explored per query: recall vs speed
    ivf_nlist: int = 0              # clusters; 0 = 4 * sqrt(items)
    ivf_nprobe: int = 16            # clusters searched per query


def resolve_kind(cfg: IndexConfig, n_items: int) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "flat" if n_items <= cfg.exact_max_items else "hnsw"


def _faiss():
    # Imported when an index is built or read, so training code runs where faiss is absent.
    import faiss
    return faiss


def build_index(vectors: np.ndarray, cfg: IndexConfig, seed: int = 0) -> faiss.Index:
    """Inner-product index over item vectors [I, d]; row i of `vectors` gets id i."""
    faiss = _faiss()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    kind = resolve_kind(cfg, n)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.hnsw_ef_search
    else:
        nlist = max(1, min(n, cfg.ivf_nlist or int(4 * np.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = cfg.ivf_nprobe
    index.add(x)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids [B, k] (-1 where the index has fewer) and inner products [B, k]."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    if len(q) == 0 or k == 0:
        return np.zeros((len(q), k), np.int64), np.zeros((len(q), k), np.float32)
    scores, ids = index.search(q, k)
    return ids.astype(np.int64), np.where(ids >= 0, scores, 0).astype(np.float32)


def save_index(index: faiss.Index, path: Path) -> None:
    _faiss().write_index(index, str(path))


def load_index(path: Path, cfg: IndexConfig) -> faiss.Index:
    """Read an index written by save_index; search-time knobs come from the config."""
    faiss = _faiss()
    index = faiss.read_index(str(path))
    if isinstance(index, faiss.IndexHNSWFlat):
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = cfg.ivf_nprobe
    return index
