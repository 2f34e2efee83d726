"""Offline/online consistency: the feature vectors served for a sample of requests, compared with
the vectors the samples give the same (request, item) rows."""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from components.features.definitions import FEATURES, definitions_version
from components.features.store import load_catalog, offline_vectors
from components.lake import Lake

# Vectors come from the same integers through the same code, in batches of other shapes: only
# the last bits of a float32 sum may differ, never a real skew.
RTOL, ATOL = 1e-5, 1e-6


def logged(request_ids: np.ndarray, rate: float) -> np.ndarray:
    """The requests [R] whose features are logged: a stable share `rate`, whatever shard serves them."""
    h = np.fromiter((zlib.crc32(b"features" + int(r).to_bytes(8, "little")) for r in request_ids),
                    np.uint32, len(request_ids))
    return (h % 100_000) < rate * 100_000


def online_table(day: int, request_ids: np.ndarray, slates: np.ndarray, x: np.ndarray) -> pa.Table:
    """features_online rows of logged requests: request ids [m], slates [m, K], vectors [m, K, F]."""
    r, pos = np.nonzero(slates >= 0)
    flat = x[r, pos].astype(np.float32)                                                # [n, F]
    return pa.table({
        "day": np.full(len(r), day, np.int32), "request_id": request_ids[r], "item_id": slates[r, pos],
        "position": pos.astype(np.int32),
        "features": pa.ListArray.from_arrays(np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32),
                                             flat.reshape(-1)),
        "features_version": [definitions_version()] * len(r),
    })


def check(lake: Lake, day: int) -> dict[str, float]:
    """Recompute the logged requests' vectors from the day's samples; write features_consistency."""
    online = lake.read("features_online", day) if lake.has("features_online", day) else \
        lake.read("features_online", [])
    with lake.connect() as con:
        con.register("logged", online)
        rows = con.sql(f"""SELECT s.*, l.features AS online_features FROM samples s
                           JOIN logged l USING (request_id, position) WHERE s.day = {day}
                           ORDER BY s.request_id, s.position""").to_arrow_table()
    compared, matched, worst, max_diff = rows.num_rows, 0, "", 0.0
    if compared:
        on = np.stack(rows.column("online_features").to_numpy(zero_copy_only=False))    # [n, F]
        off = offline_vectors(rows, load_catalog(lake, day))                             # [n, F]
        close = np.isclose(on, off, rtol=RTOL, atol=ATOL) if on.shape == off.shape else \
            np.zeros((compared, len(FEATURES)), bool)
        matched = int(close.all(axis=1).sum())
        bad = (~close).sum(axis=0)
        worst = FEATURES[int(bad.argmax())].name if bad.any() else ""
        max_diff = float(np.abs(on - off).max()) if on.shape == off.shape else float("inf")
    result = {"compared": compared, "matched": matched, "logged": online.num_rows,
              "match_rate": matched / compared if compared else None}
    lake.write("features_consistency", day, pa.Table.from_pylist(
        [{"day": day, **result, "worst_feature": worst, "max_abs_diff": max_diff}]))
    return {k: float(v) for k, v in result.items() if v is not None}
