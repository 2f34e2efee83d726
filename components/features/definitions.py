"""The ranker's feature vector, computed by one function for training rows and served requests."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.types import Catalog

PRIOR_CTR = 0.05
PRIOR_WEIGHT = 20.0


@dataclass(frozen=True)
class FeatureDef:
    name: str
    entity: str          # user, item or user x item
    source: str          # the columns it is computed from
    description: str


FEATURES = (
    FeatureDef("u_ctr", "user", "features_user.u_clicks, u_impressions",
               "user's CTR over all earlier days, smoothed towards a prior"),
    FeatureDef("u_log_impressions", "user", "features_user.u_impressions", "log(1 + impressions seen)"),
    FeatureDef("i_ctr", "item", "features_item.i_clicks, i_impressions",
               "item's CTR over all earlier days, smoothed towards a prior"),
    FeatureDef("i_log_impressions", "item", "features_item.i_impressions", "log(1 + times shown)"),
    FeatureDef("cat_affinity", "user x item", "features_user.u_recent, items.category",
               "share of the user's recent clicks in the item's category"),
    FeatureDef("content_match", "user x item", "features_user.u_recent, items.content",
               "cosine between the mean content of recent clicks and the item's content"),
    FeatureDef("has_history", "user", "features_user.u_recent", "1 if the user has clicked before"),
)


def _smoothed(clicks: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    return (clicks + PRIOR_CTR * PRIOR_WEIGHT) / (impressions + PRIOR_WEIGHT)


def vectorize(
    u_impressions: np.ndarray,  # [B]
    u_clicks: np.ndarray,       # [B]
    u_recent: np.ndarray,       # [B, H] -1 padded
    items: np.ndarray,          # [B, n] item ids, -1 padded
    i_impressions: np.ndarray,  # [B, n]
    i_clicks: np.ndarray,       # [B, n]
    catalog: Catalog,
) -> np.ndarray:
    """Feature tensor [B, n, F] in the order of FEATURES."""
    b, n = items.shape
    valid_hist = u_recent >= 0                                                      # [B, H]
    hist = np.where(valid_hist, u_recent, 0)
    n_hist = valid_hist.sum(axis=1)                                                 # [B]
    safe_items = np.where(items >= 0, items, 0)

    hist_cat = catalog.category[hist]                                               # [B, H]
    item_cat = catalog.category[safe_items]                                         # [B, n]
    same = (hist_cat[:, None, :] == item_cat[:, :, None]) & valid_hist[:, None, :]  # [B, n, H]
    cat_aff = same.sum(axis=2) / np.maximum(n_hist, 1)[:, None]                     # [B, n]

    content = catalog.content
    profile = (content[hist] * valid_hist[:, :, None]).sum(axis=1)                  # [B, d]
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
    item_vec = content[safe_items]                                                  # [B, n, d]
    item_vec = item_vec / np.maximum(np.linalg.norm(item_vec, axis=2, keepdims=True), 1e-9)
    match = np.einsum("bd,bnd->bn", profile, item_vec)                              # [B, n]

    u_ctr = _smoothed(u_clicks, u_impressions)[:, None]                             # [B, 1]
    cols = [
        np.broadcast_to(u_ctr, (b, n)),
        np.broadcast_to(np.log1p(u_impressions)[:, None], (b, n)),
        _smoothed(i_clicks, i_impressions),
        np.log1p(i_impressions),
        cat_aff,
        match,
        np.broadcast_to((n_hist > 0)[:, None], (b, n)),
    ]
    return np.stack(cols, axis=2).astype(np.float32)                                # [B, n, F]
