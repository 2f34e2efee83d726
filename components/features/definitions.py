"""The ranker's features, each defined once: its stored inputs and the transform that makes it.

`vectorize` is the one function computing the feature tensor, for training rows (the samples'
columns) and for served requests (the FeatureStore's and the StreamProcessor's columns) alike.
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from components.features.columns import BY_NAME, COLUMNS, RECALL_CHANNELS
from components.types import Catalog

PRIOR_CTR = 0.05
PRIOR_WEIGHT = 20.0


@dataclass(frozen=True)
class Context:
    """What a transform sees: raw columns (user and stream ones [B] or [B, H], item ones [B, n]),
    the candidate items [B, n] (-1 padded), the day of each request [B] and the catalog."""

    raw: Mapping[str, np.ndarray]
    items: np.ndarray
    day: np.ndarray
    catalog: Catalog

    @property
    def shape(self) -> tuple[int, int]:
        return self.items.shape

    def user(self, name: str) -> np.ndarray:
        """A per-request column broadcast over the candidates: [B] -> [B, n]."""
        return np.broadcast_to(np.asarray(self.raw[name], np.float64)[:, None], self.shape)


@dataclass(frozen=True)
class FeatureDef:
    name: str
    entity: str                 # user, item, user x item, request (real time) or candidate (as recalled)
    window: str
    description: str
    inputs: tuple[str, ...]     # stored columns (components/features/columns.py)
    transform: Callable[[Context], np.ndarray]   # -> [B, n]
    dtype: str = "float32"

    @property
    def sources(self) -> tuple[str, ...]:
        """Lake tables behind the feature: its columns' tables and their sources."""
        out = {t for c in self.inputs for t in (BY_NAME[c].table, *BY_NAME[c].sources)} - {"stream", "stream_item", "candidate"}
        return tuple(sorted(out | ({"items"} if self.entity == "user x item" else set())))

    def definition_hash(self) -> str:
        """Changes whenever the feature's inputs' producers or its transform's code change."""
        text = repr((self.name, self.entity, self.window, self.dtype, [BY_NAME[c] for c in self.inputs],
                     inspect.getsource(self.transform)))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _smoothed(clicks: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    return (clicks + PRIOR_CTR * PRIOR_WEIGHT) / (impressions + PRIOR_WEIGHT)


def user_ctr(suffix: str) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        return _smoothed(ctx.user(f"u_clicks{suffix}"), ctx.user(f"u_impressions{suffix}"))
    return transform


def item_ctr(suffix: str) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        return _smoothed(ctx.raw[f"i_clicks{suffix}"], ctx.raw[f"i_impressions{suffix}"])
    return transform


def user_log(name: str) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        return np.log1p(ctx.user(name))
    return transform


def item_ratio(clicks: str, impressions: str) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        return _smoothed(ctx.raw[clicks], ctx.raw[impressions])
    return transform


def item_log(name: str) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        return np.log1p(ctx.raw[name])
    return transform


def item_age(ctx: Context) -> np.ndarray:
    # Candidates never outlive the catalog; a -1 pad has created_day 0 and is masked by the ranker.
    return np.log1p(np.maximum(ctx.day[:, None] - ctx.raw["i_created_day"], 0))


def _history(ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    recent = ctx.raw["u_recent"]                                                       # [B, H] -1 padded
    valid = recent >= 0
    return np.where(valid, recent, 0), valid, valid.sum(axis=1)


def category_affinity(ctx: Context) -> np.ndarray:
    hist, valid, n_hist = _history(ctx)
    item_cat = ctx.catalog.category[np.where(ctx.items >= 0, ctx.items, 0)]           # [B, n]
    same = (ctx.catalog.category[hist][:, None, :] == item_cat[:, :, None]) & valid[:, None, :]  # [B, n, H]
    return same.sum(axis=2) / np.maximum(n_hist, 1)[:, None]                           # [B, n]


def content_match(ctx: Context) -> np.ndarray:
    hist, valid, _ = _history(ctx)
    content = ctx.catalog.content
    profile = (content[hist] * valid[:, :, None]).sum(axis=1)                          # [B, d]
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-9)
    item_vec = content[np.where(ctx.items >= 0, ctx.items, 0)]                         # [B, n, d]
    item_vec = item_vec / np.maximum(np.linalg.norm(item_vec, axis=2, keepdims=True), 1e-9)
    return np.einsum("bd,bnd->bn", profile, item_vec)                                  # [B, n]


LAST_CLICKS = 3
LAST_DECAY = 0.5


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _over_last_clicks(ctx: Context, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """score(hist [B, L]) -> [B, n, L], averaged over the last LAST_CLICKS clicks with weight
    LAST_DECAY^k (k clicks ago); 0 for a user without clicks."""
    hist, valid, _ = _history(ctx)
    hist, valid = hist[:, :LAST_CLICKS], valid[:, :LAST_CLICKS]                        # [B, L]
    weight = valid * LAST_DECAY ** np.arange(hist.shape[1])                            # [B, L] 0 where none
    return (score(hist) * weight[:, None, :]).sum(axis=2) / np.maximum(weight.sum(axis=1), 1e-9)[:, None]


def last_content_sim(ctx: Context) -> np.ndarray:
    # What a user takes next leans on the last few takes, the newest most (complements, product
    # lines); a mean over all recent clicks (content_match) blurs exactly that.
    content = ctx.catalog.content
    items = _unit(content[np.where(ctx.items >= 0, ctx.items, 0)])                    # [B, n, d]
    return _over_last_clicks(ctx, lambda hist: np.einsum("bld,bnd->bnl", _unit(content[hist]), items))


def recent_coclick(ctx: Context) -> np.ndarray:
    # The item-to-item signal recall's item-CF ranks by, for the ranker: where each of the last few
    # takes sits in the candidate's co-clicked list (1 / (1 + rank), 0 when absent), newest weighing most.
    neighbours = ctx.raw["i_coclicked"]                                                # [B, n, K] -1 padded
    closeness = 1.0 / (1.0 + np.arange(neighbours.shape[2]))                           # [K]

    def score(hist: np.ndarray) -> np.ndarray:                                         # [B, n, L]
        same = neighbours[:, :, None, :] == hist[:, None, :, None]                    # [B, n, L, K]
        return (same * closeness).max(axis=3, initial=0.0)
    return _over_last_clicks(ctx, score)


def has_history(ctx: Context) -> np.ndarray:
    return np.broadcast_to((_history(ctx)[2] > 0)[:, None], ctx.shape)


def stream_count(name: str, log: bool) -> Callable[[Context], np.ndarray]:
    def transform(ctx: Context) -> np.ndarray:
        value = ctx.user(name)
        return np.log1p(value) if log else value
    return transform


def recall_rank(channel: str) -> Callable[[Context], np.ndarray]:
    # What recall knew: a channel's own order (SASRec's next-item scores, item-CF's co-clicks) is a
    # signal the ranker's other features only approximate; 1 / (1 + rank), 0 when not recalled.
    def transform(ctx: Context) -> np.ndarray:
        rank = np.asarray(ctx.raw[f"c_rank_{channel}"], np.float64)
        return np.where(rank >= 0, 1.0 / (1.0 + np.maximum(rank, 0.0)), 0.0)
    return transform


FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef("u_ctr", "user", "all earlier days", "user's CTR, smoothed towards a prior",
               ("u_clicks", "u_impressions"), user_ctr("")),
    FeatureDef("u_log_impressions", "user", "all earlier days", "log(1 + impressions seen)",
               ("u_impressions",), user_log("u_impressions")),
    FeatureDef("i_ctr", "item", "all earlier days", "item's CTR, smoothed towards a prior",
               ("i_clicks", "i_impressions"), item_ctr("")),
    FeatureDef("i_log_impressions", "item", "all earlier days", "log(1 + times shown)",
               ("i_impressions",), item_log("i_impressions")),
    FeatureDef("cat_affinity", "user x item", f"last {BY_NAME['u_recent'].window}",
               "share of the user's recent clicks in the item's category", ("u_recent",), category_affinity),
    FeatureDef("content_match", "user x item", BY_NAME["u_recent"].window,
               "cosine between the mean content of recent clicks and the item's content", ("u_recent",),
               content_match),
    FeatureDef("last_content_sim", "user x item", f"last {LAST_CLICKS} clicks",
               f"cosine of the item's content with each of the last {LAST_CLICKS} clicks, weighted "
               f"{LAST_DECAY}^k by recency", ("u_recent",), last_content_sim),
    FeatureDef("recent_coclick", "user x item", f"last {LAST_CLICKS} clicks x {BY_NAME['i_coclicked'].window}",
               f"where each of the last {LAST_CLICKS} clicks ranks in the item's co-clicked list, "
               f"1 / (1 + rank), weighted {LAST_DECAY}^k by recency", ("u_recent", "i_coclicked"), recent_coclick),
    FeatureDef("has_history", "user", "all earlier days", "1 if the user has clicked before", ("u_recent",),
               has_history),
    *(FeatureDef(f"{e}_ctr_{d}d", entity, f"{d} day{'s' * (d > 1)}", f"{entity}'s CTR, smoothed towards a prior",
                 (f"{e}_clicks_{d}d", f"{e}_impressions_{d}d"), fn(f"_{d}d"))
      for e, entity, fn in (("u", "user", user_ctr), ("i", "item", item_ctr)) for d in (1, 7)),
    FeatureDef("u_log_impressions_7d", "user", "7 days", "log(1 + impressions seen)",
               ("u_impressions_7d",), user_log("u_impressions_7d")),
    FeatureDef("i_log_impressions_7d", "item", "7 days", "log(1 + times shown)",
               ("i_impressions_7d",), item_log("i_impressions_7d")),
    FeatureDef("i_age", "item", "catalog", "log(1 + days since the item entered the catalog)",
               ("i_created_day",), item_age),
    FeatureDef("rt_u_log_impressions_1h", "request", "last hour, micro-batches",
               "log(1 + the user's impressions in the last hour), from the stream",
               ("rt_u_impressions_1h",), stream_count("rt_u_impressions_1h", log=True)),
    FeatureDef("rt_u_clicks_1h", "request", "last hour, micro-batches",
               "the user's clicks in the last hour, from the stream", ("rt_u_clicks_1h",),
               stream_count("rt_u_clicks_1h", log=False)),
    FeatureDef("rt_i_log_impressions_1h", "item", "last hour, micro-batches",
               "log(1 + the item's impressions in the last hour, all users), from the shared stream",
               ("rt_i_impressions_1h",), item_log("rt_i_impressions_1h")),
    FeatureDef("rt_i_log_clicks_1h", "item", "last hour, micro-batches",
               "log(1 + the item's clicks in the last hour, all users), from the shared stream",
               ("rt_i_clicks_1h",), item_log("rt_i_clicks_1h")),
    FeatureDef("rt_i_ctr_1h", "item", "last hour, micro-batches",
               "the item's last-hour CTR, smoothed towards a prior", ("rt_i_clicks_1h", "rt_i_impressions_1h"),
               item_ratio("rt_i_clicks_1h", "rt_i_impressions_1h")),
    *(FeatureDef(f"recall_{ch}", "candidate", "as served", f"1 / (1 + the candidate's rank in channel {ch}'s "
                 f"list), 0 when {ch} did not recall it", (f"c_rank_{ch}",), recall_rank(ch))
      for ch in RECALL_CHANNELS),
)

USED_COLUMNS = tuple(c.name for c in COLUMNS if any(c.name in f.inputs for f in FEATURES))


def definitions_version() -> str:
    """One hash over every feature's definition: what a model's lineage records."""
    return hashlib.sha256("".join(f.definition_hash() for f in FEATURES).encode()).hexdigest()[:12]


def vectorize(raw: Mapping[str, np.ndarray], items: np.ndarray, day: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Feature tensor [B, n, F] in the order of FEATURES, from raw columns (see Context)."""
    missing = [c for c in USED_COLUMNS if c not in raw]
    if missing:
        raise KeyError(f"feature columns {missing} are missing; the features need {list(USED_COLUMNS)}")
    ctx = Context(raw, items, np.asarray(day), catalog)
    cols = [np.broadcast_to(f.transform(ctx), items.shape) for f in FEATURES]
    return np.stack(cols, axis=2).astype(np.float32)                                    # [B, n, F]
