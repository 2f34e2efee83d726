"""Feature tables: built offline in DuckDB per serving day, looked up online by id."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from components.lake import Lake
from components.types import Catalog, ItemFeatures, UserBatch, pad_rows

SECONDS_PER_DAY = 86_400
RECENT_CLICKS = 20


def build_features(lake: Lake, day: int) -> None:
    """Write features_user and features_item valid for serving `day`: events of days < day only."""
    as_of = day * SECONDS_PER_DAY
    con = lake.connect()
    has_logs = lake.days("impressions") and min(lake.days("impressions")) < day
    events = (f"(SELECT * FROM impressions WHERE day < {day})" if has_logs else
              "(SELECT NULL::BIGINT user_id, NULL::BIGINT item_id, NULL::BIGINT ts, "
              "NULL::INT position, NULL::BOOLEAN clicked WHERE false)")
    users = con.sql(f"""
        SELECT {day}::INT AS day, u.user_id, {as_of}::BIGINT AS as_of,
               coalesce(e.n, 0)::BIGINT AS u_impressions, coalesce(e.c, 0)::BIGINT AS u_clicks,
               coalesce(e.recent, []::BIGINT[]) AS u_recent
        FROM (SELECT DISTINCT user_id FROM users WHERE created_day <= {day}) u
        LEFT JOIN (
            SELECT user_id, count(*) AS n, count(*) FILTER (WHERE clicked) AS c,
                   list(item_id ORDER BY ts DESC, position) FILTER (WHERE clicked)[1:{RECENT_CLICKS}] AS recent
            FROM {events} GROUP BY user_id
        ) e USING (user_id)
        ORDER BY u.user_id
    """).to_arrow_table()
    items = con.sql(f"""
        SELECT {day}::INT AS day, i.item_id, {as_of}::BIGINT AS as_of,
               coalesce(e.n, 0)::BIGINT AS i_impressions, coalesce(e.c, 0)::BIGINT AS i_clicks
        FROM (SELECT DISTINCT item_id FROM items WHERE created_day <= {day}) i
        LEFT JOIN (SELECT item_id, count(*) AS n, count(*) FILTER (WHERE clicked) AS c
                   FROM {events} GROUP BY item_id) e USING (item_id)
        ORDER BY i.item_id
    """).to_arrow_table()
    con.close()
    lake.write("features_user", day, users)
    lake.write("features_item", day, items)


def load_catalog(lake: Lake, day: int) -> Catalog:
    """Items known on `day`, as dense arrays indexed by item id."""
    with lake.connect() as con:
        table = con.sql(f"SELECT item_id, category, title, content FROM items WHERE created_day <= {day} "
                        f"ORDER BY item_id").to_arrow_table()
    ids = table.column("item_id").to_numpy()
    if len(ids) and not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError("item ids must be dense from 0; the items table has gaps")
    content = np.stack(table.column("content").to_numpy(zero_copy_only=False)) if len(ids) else np.zeros((0, 1))
    return Catalog(item_id=ids, category=table.column("category").to_numpy().astype(np.int32),
                   content=content.astype(np.float32),
                   title=np.asarray(table.column("title").to_pylist(), dtype=object))


@dataclass(frozen=True)
class FeatureStore:
    """Online lookups for one serving day, from the same tables the samples are joined with."""

    day: int
    items: ItemFeatures
    user_index: dict[int, int]
    u_impressions: np.ndarray
    u_clicks: np.ndarray
    u_recent: list[np.ndarray]

    @classmethod
    def load(cls, lake: Lake, day: int) -> "FeatureStore":
        users = lake.read("features_user", day)
        items = lake.read("features_item", day)
        catalog = load_catalog(lake, day)
        n = catalog.n_items
        i_imp, i_clk = np.zeros(n, np.int64), np.zeros(n, np.int64)
        ids = items.column("item_id").to_numpy()
        i_imp[ids] = items.column("i_impressions").to_numpy()
        i_clk[ids] = items.column("i_clicks").to_numpy()
        user_ids = users.column("user_id").to_numpy()
        return cls(
            day=day,
            items=ItemFeatures(catalog=catalog, impressions=i_imp, clicks=i_clk),
            user_index={int(u): i for i, u in enumerate(user_ids)},
            u_impressions=users.column("u_impressions").to_numpy(),
            u_clicks=users.column("u_clicks").to_numpy(),
            u_recent=[np.asarray(r, np.int64) for r in users.column("u_recent").to_pylist()],
        )

    def user_batch(self, user_ids: np.ndarray, request_ids: np.ndarray | None = None) -> UserBatch:
        """Features for these users; an unknown user gets the features of a new one."""
        rows = [self.user_index.get(int(u), -1) for u in user_ids]
        empty = np.zeros(0, np.int64)
        return UserBatch(
            user_ids=np.asarray(user_ids, np.int64),
            impressions=np.array([self.u_impressions[r] if r >= 0 else 0 for r in rows], np.int64),
            clicks=np.array([self.u_clicks[r] if r >= 0 else 0 for r in rows], np.int64),
            recent=pad_rows([self.u_recent[r] if r >= 0 else empty for r in rows], RECENT_CLICKS, -1, np.int64),
            items=self.items,
            request_ids=None if request_ids is None else np.asarray(request_ids, np.int64),
        )


def user_batch_from_table(table: pa.Table, items: ItemFeatures) -> UserBatch:
    """A UserBatch from sample rows (u_* columns), the offline twin of FeatureStore.user_batch."""
    return UserBatch(
        user_ids=table.column("user_id").to_numpy(),
        impressions=table.column("u_impressions").to_numpy(),
        clicks=table.column("u_clicks").to_numpy(),
        recent=pad_rows([np.asarray(r, np.int64) for r in table.column("u_recent").to_pylist()],
                        RECENT_CLICKS, -1, np.int64),
        items=items,
    )
