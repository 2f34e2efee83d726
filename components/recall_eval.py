"""Daily recall@K of each recall channel and of the merge, against the day's clicks.

Day d is served by the models trained on days <= d - 1 and by user features built from events
before day d (components/features), so replaying each clicking user's candidates from those
models and features reproduces what serving recalled for them, and no click of day d (the
targets) reaches either the models or their inputs.

Targets: the distinct items a user clicked on day d that were not already in the history the
channels read (the merge drops seen items, so those could never be recalled). A channel's
recall@K is |targets in its top K unseen items| / |targets|, averaged over users; the merge's is
the same over the merged list in its round-robin order, cut at K, and over the whole list
(`all`). Users are evaluated in the arm that served them.

Exposure bias: a click can only land on a shown item, and the shown items are the serving
arm's own merged candidates after ranking. So the merge (and each channel that fed it) is
measured on targets it helped select, and its recall is inflated towards 1; a channel that was
not in the serving arm is measured on clicks another policy exposed, which is the fairer
comparison. Every row carries `in_arm` so the two are never mixed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.typedconf import require
from components.features.store import FeatureStore
from components.lake import Lake
from components.serving.pipeline import Pipeline
from components.types import Candidates

MERGE = "merge"


@dataclass(frozen=True)
class RecallEvalConfig:
    ks: tuple[int, ...] = (50, 200)   # cut-offs of recall@K
    max_users: int = 5000             # clicking users evaluated a day (the same hash-chosen ones daily)

    def validate(self, where: str) -> None:
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), f"{where}.ks",
                f"must be one or more cut-offs >= 1, got {list(self.ks)}")
        require(self.max_users >= 1, f"{where}.max_users", f"must be at least 1, got {self.max_users}")


@dataclass(frozen=True)
class DayClicks:
    """One row per evaluated user: who, the arm that served them, what they clicked on the day."""

    user_id: np.ndarray            # [U]
    arm: np.ndarray                # [U] object
    clicked: list[np.ndarray]      # per user: distinct items clicked on the day


def day_clicks(lake: Lake, day: int, max_users: int) -> DayClicks:
    """The users who clicked on `day` (at most `max_users`, the lowest hashes of their ids, so the
    same users are kept every day), with the arm of their first request of the day."""
    with lake.connect() as con:
        rows = con.sql(f"""
            WITH c AS (SELECT user_id, list(DISTINCT item_id ORDER BY item_id) AS items
                       FROM impressions WHERE day = {day} AND clicked GROUP BY user_id),
                 a AS (SELECT user_id, arg_min(arm, ts) AS arm FROM requests WHERE day = {day} GROUP BY user_id)
            SELECT c.user_id, a.arm, c.items FROM c JOIN a USING (user_id)
            ORDER BY hash(c.user_id), c.user_id LIMIT {int(max_users)}
        """).fetchall()
    rows.sort(key=lambda r: r[0])
    return DayClicks(user_id=np.asarray([r[0] for r in rows], np.int64),
                     arm=np.asarray([r[1] for r in rows], dtype=object),
                     clicked=[np.asarray(r[2], np.int64) for r in rows])


def unseen_top(items: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k items that are valid (>= 0) and not in that row's `seen`: [B, n] -> [B, k]."""
    out = np.full((len(items), k), -1, np.int64)
    for row in range(len(items)):
        keep = items[row][(items[row] >= 0) & ~np.isin(items[row], seen[row])]
        out[row, : min(k, len(keep))] = keep[:k]
    return out


def recall_of(lists: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """Per row: share of the row's targets found in its list ([B, k] -> [B]); NaN without targets."""
    return np.array([np.isin(t, lists[row]).mean() if len(t) else np.nan for row, t in enumerate(targets)])


def arm_recall(pipeline: Pipeline, store: FeatureStore, users: np.ndarray, clicked: list[np.ndarray],
               ks: Sequence[int], all_channels: Mapping[str, object]) -> dict[tuple[str, str], tuple[float, int]]:
    """(channel or 'merge', 'K' or 'all') -> (mean recall, users with a target) for one arm's users."""
    batch = store.user_batch(users)
    seen = [r[r >= 0] for r in batch.recent]
    targets = [t[~np.isin(t, s)] for t, s in zip(clicked, seen)]
    has = np.array([len(t) > 0 for t in targets])
    out: dict[tuple[str, str], tuple[float, int]] = {}
    if not has.any():
        return out
    mean = lambda r: (float(np.nanmean(r)), int(has.sum()))  # noqa: E731
    depth = max(ks) + batch.recent.shape[1]   # seen items are asked for and dropped, as serving does
    for name, channel in all_channels.items():
        cands: Candidates = channel.recall(batch, depth)
        for k in ks:
            out[(name, str(k))] = mean(recall_of(unseen_top(cands.items, seen, k), targets))
    recalled, merged, order = pipeline.recall_and_merge(batch)
    ranked = np.take_along_axis(merged, np.argsort(order, axis=1, kind="stable"), axis=1)   # [B, M]
    for k in ks:
        out[(MERGE, str(k))] = mean(recall_of(ranked[:, :k], targets))
    out[(MERGE, "all")] = mean(recall_of(ranked, targets))
    return out


def recall_daily(lake: Lake, day: int, pipelines: Mapping[str, Pipeline], ks: Sequence[int] = (50, 200),
                 max_users: int = 5000) -> list[dict]:
    """Recall@K of every loaded channel and of each arm's merge on `day`, per serving arm.

    Rows: {day, arm, channel, k, in_arm, recall, users}; `k` is 'all' for the whole merged list.
    """
    clicks = day_clicks(lake, day, max_users)
    if not len(clicks.user_id):
        return []
    store = FeatureStore.load(lake, day)
    # Every channel any arm loaded is scored for every arm's users: the off-arm figures are the
    # ones exposure did not shape.
    channels = {n: ch for p in pipelines.values() for n, ch in p.channels.items()}
    rows = []
    for arm in sorted(set(clicks.arm.tolist())):
        if arm not in pipelines:
            continue
        pick = np.flatnonzero(clicks.arm == arm)
        got = arm_recall(pipelines[arm], store, clicks.user_id[pick], [clicks.clicked[i] for i in pick],
                         ks, channels)
        for (name, k), (value, users) in sorted(got.items()):
            rows.append({"day": day, "arm": arm, "channel": name, "k": k,
                         "in_arm": name == MERGE or name in pipelines[arm].channels,
                         "recall": value, "users": users})
    return rows


def metric_name(row: Mapping[str, object]) -> str:
    """MLflow metric key of a row, e.g. `recall.control.swing.at_50`."""
    return f"recall.{row['arm']}.{row['channel']}.at_{row['k']}"


def markdown(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """The rows as a markdown table (arm, channel, in arm, users, one column per K)."""
    if not rows:
        return []
    ks = list(dict.fromkeys(str(r["k"]) for r in rows))
    table: dict[tuple[str, str], dict[str, Mapping[str, object]]] = {}
    for r in rows:
        table.setdefault((str(r["arm"]), str(r["channel"])), {})[str(r["k"])] = r
    lines = ["| arm | channel | in arm | users | " + " | ".join(f"recall@{k}" for k in ks) + " |",
             "|---|---|---|---|" + "---|" * len(ks)]
    for (arm, channel), by_k in table.items():
        first = next(iter(by_k.values()))
        cells = [f"{by_k[k]['recall']:.3f}" if k in by_k else "" for k in ks]
        lines.append(f"| {arm} | {channel} | {'yes' if first['in_arm'] else 'no'} | {first['users']} | "
                     + " | ".join(cells) + " |")
    return lines
