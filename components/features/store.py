"""Feature tables: built offline in DuckDB per serving day from the column definitions, looked up
online by id; the raw columns of a served batch or of sample rows, the input of `vectorize`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pyarrow as pa

from components.features.columns import BY_NAME, ORGANIC_POSITION, RECENT_CLICKS, columns_of, daily_sql, width
from components.features.definitions import FEATURES, vectorize
from components.lake import Lake
from components.types import Catalog, ItemFeatures, UserBatch

# Columns UserBatch and ItemFeatures carry as named fields, for recall channels as much as rankers.
USER_FIELDS = {"u_impressions": "impressions", "u_clicks": "clicks", "u_recent": "recent"}
ITEM_FIELDS = {"i_impressions": "impressions", "i_clicks": "clicks"}
WIDE = frozenset(c.name for c in BY_NAME.values() if width(c))      # fixed-width list columns: [rows, width]
USER_SCALARS = tuple(c.name for c in columns_of("features_user") if c.name != "u_recent")
NO_EVENTS = ("(SELECT NULL::BIGINT user_id, NULL::BIGINT item_id, NULL::BIGINT ts, NULL::BIGINT request_id, "
             "NULL::INT position, NULL::BOOLEAN clicked, NULL::BOOLEAN organic WHERE false)")


def events_before(lake: Lake, day: int) -> str:
    """The events the daily features count: impressions of days < day, and the organic takes of
    those days as clicked rows after their visit's slate (columns.ORGANIC_POSITION)."""
    if not (lake.days("impressions") and min(lake.days("impressions")) < day):
        return NO_EVENTS
    events = (f"SELECT user_id, item_id, ts, request_id, position, clicked, false AS organic FROM impressions "
              f"WHERE day < {day}")
    if any(d < day for d in lake.days("organic")):
        events += (f" UNION ALL SELECT user_id, item_id, ts, request_id, {ORGANIC_POSITION} AS position, true AS clicked, "
                   f"true AS organic FROM organic WHERE day < {day}")
    return f"({events})"


def build_features(lake: Lake, day: int) -> None:
    """Write features_user and features_item valid for serving `day`: events of days < day only."""
    con = lake.connect()
    events = events_before(lake, day)
    users = con.sql(daily_sql("features_user", day, events,
                              f"(SELECT DISTINCT user_id FROM users WHERE created_day <= {day})")).to_arrow_table()
    items = con.sql(daily_sql("features_item", day, events,
                              f"(SELECT item_id, min(created_day) AS created_day FROM items "
                              f"WHERE created_day <= {day} GROUP BY item_id)")).to_arrow_table()
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


def blank_columns(table: str, n: int) -> dict[str, np.ndarray]:
    """Zeros for the scalar columns of `table` not carried as named fields: an entity with no
    history, created on day 0. For batches built by hand (tests, benchmarks)."""
    named = USER_FIELDS | ITEM_FIELDS
    return {c.name: np.full((n, width(c)), -1, np.int64) if width(c) else np.zeros(n, np.int64)
            for c in columns_of(table) if c.name not in named}


def item_columns(lake: Lake, day: int, n_items: int) -> dict[str, np.ndarray]:
    """The features_item columns of `day`, dense [I] int64 by item id."""
    items = lake.read("features_item", day)
    ids = items.column("item_id").to_numpy()
    out = {}
    for c in columns_of("features_item"):
        if width(c):
            col = np.full((n_items, width(c)), -1, np.int64)
            col[ids] = list_matrix(items.column(c.name), width(c))
        else:
            col = np.zeros(n_items, np.int64)
            col[ids] = items.column(c.name).to_numpy()
        out[c.name] = col
    return out


def item_features(catalog: Catalog, columns: Mapping[str, np.ndarray]) -> ItemFeatures:
    """The day's items from their dense daily columns; the stream_item ones none seen yet."""
    return ItemFeatures(catalog=catalog, impressions=columns["i_impressions"], clicks=columns["i_clicks"],
                        columns={k: v for k, v in columns.items() if k not in ITEM_FIELDS} |
                        blank_columns("stream_item", catalog.n_items))


def load_items(lake: Lake, day: int) -> ItemFeatures:
    catalog = load_catalog(lake, day)
    return item_features(catalog, item_columns(lake, day, catalog.n_items))


@dataclass(frozen=True)
class FeatureStore:
    """Online lookups for one serving day: every daily column the definitions declare, by id.

    Users are held as sorted ids and plain arrays (recent clicks as offsets into one array), not a
    dict and a list of arrays per user: a million users cost tens of MB, not hundreds.
    """

    day: int
    items: ItemFeatures
    user_ids: np.ndarray                    # [U] int64, sorted
    user_columns: dict[str, np.ndarray]     # [U] each, in user_ids order
    recent_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))   # [U + 1]
    recent_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))    # [offsets[-1]]

    @classmethod
    def by_hand(cls, day: int, items: ItemFeatures, user_ids: list[int], user_columns: Mapping[str, np.ndarray],
                recent: list[np.ndarray]) -> "FeatureStore":
        """A store from per-user rows in any order (tests, benchmarks)."""
        order = np.argsort(np.asarray(user_ids, np.int64), kind="stable")
        lengths = np.array([len(recent[i]) for i in order], np.int64)
        values = np.concatenate([np.asarray(recent[i], np.int64) for i in order]) if len(order) else np.zeros(0, np.int64)
        return cls(day, items, np.asarray(user_ids, np.int64)[order],
                   {k: np.asarray(v)[order] for k, v in user_columns.items()},
                   np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), values.astype(np.int64))

    @classmethod
    def load(cls, lake: Lake, day: int, users: np.ndarray | None = None) -> "FeatureStore":
        """The day's features; of `users` only when given (a shard's), read a batch at a time, so
        a shard holds its own users' rows and never the whole table."""
        names = list(USER_SCALARS)
        wanted = None if users is None else np.unique(np.asarray(users, np.int64))
        parts: list[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        for batch in lake.read_batches("features_user", [day], columns=["user_id", *names, "u_recent"]):
            uid = batch.column("user_id").to_numpy()
            if wanted is not None:
                batch = batch.filter(pa.array(np.isin(uid, wanted)))
                uid = batch.column("user_id").to_numpy()
            rec = batch.column("u_recent").combine_chunks() if batch.num_rows else None
            off = rec.offsets.to_numpy().astype(np.int64) if rec is not None else np.zeros(1, np.int64)
            vals = rec.values.to_numpy(zero_copy_only=False).astype(np.int64)[off[0]:off[-1]] if rec is not None \
                else np.zeros(0, np.int64)
            parts.append((uid, {n: batch.column(n).to_numpy() for n in names}, np.diff(off), vals))
        uid = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        order = np.argsort(uid, kind="stable")
        lengths = np.concatenate([p[2] for p in parts])[order] if parts else np.zeros(0, np.int64)
        starts = np.concatenate([[0], np.cumsum(np.concatenate([p[2] for p in parts]))[:-1]]) if parts else lengths
        values = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64)
        take = np.repeat(starts[order], lengths) + _ranks(lengths)
        return cls(
            day=day,
            items=load_items(lake, day),
            user_ids=uid[order].astype(np.int64),
            user_columns={n: np.concatenate([p[1][n] for p in parts])[order] if parts else np.zeros(0, np.int64)
                          for n in names},
            recent_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            recent_values=values[take],
        )

    def user_batch(self, user_ids: np.ndarray, request_ids: np.ndarray | None = None,
                   realtime: Mapping[str, np.ndarray] | None = None, items: ItemFeatures | None = None) -> UserBatch:
        """Features for these users; an unknown user gets the features of a new one. `realtime`:
        the stream columns of these requests (StreamProcessor.lookup), none seen when omitted;
        `items`: the day's items with the stream_item columns of the moment (ItemStream), else
        the store's own (none seen)."""
        asked = np.asarray(user_ids, np.int64)
        pos = np.minimum(np.searchsorted(self.user_ids, asked), max(len(self.user_ids) - 1, 0))
        known = (self.user_ids[pos] == asked) if len(self.user_ids) else np.zeros(len(asked), bool)
        rows = np.where(known, pos, -1)

        def take(col: np.ndarray) -> np.ndarray:
            return np.where(known, col[np.where(known, rows, 0)] if len(col) else 0, 0).astype(np.int64)

        cols = {name: take(col) for name, col in self.user_columns.items()}
        safe = np.where(known, rows, 0)
        start = self.recent_offsets[safe]
        length = np.where(known, np.minimum(self.recent_offsets[safe + 1] - start, RECENT_CLICKS), 0)
        recent = np.full((len(rows), RECENT_CLICKS), -1, np.int64)
        r = np.repeat(np.arange(len(rows)), length)
        rank = _ranks(length)
        recent[r, rank] = self.recent_values[np.repeat(start, length) + rank]
        return assemble(self.day, self.items if items is None else items, asked, cols, recent, request_ids, realtime)


def assemble(day: int, items: ItemFeatures, asked: np.ndarray, cols: dict[str, np.ndarray], recent: np.ndarray,
             request_ids: np.ndarray | None, realtime: Mapping[str, np.ndarray] | None) -> UserBatch:
    """The UserBatch of looked-up rows (the daily columns [B] int64, recent [B, H]): one layout for
    every store, so the in-process and the server store give the same batch."""
    rt = blank_columns("stream", len(asked)) if realtime is None else dict(realtime)
    return UserBatch(
        user_ids=asked,
        impressions=cols.pop("u_impressions"), clicks=cols.pop("u_clicks"),
        recent=recent,
        items=items,
        request_ids=None if request_ids is None else np.asarray(request_ids, np.int64),
        features=cols | rt, day=day,
    )


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for each run of the given lengths, concatenated."""
    lengths = np.asarray(lengths, np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def online_vectors(users: UserBatch, items: np.ndarray, ranks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Features of served users [B] x candidate items [B, n] -> [B, n, F]. `ranks`: channel -> [B, n]
    each candidate's rank in that channel's list (-1 not recalled), as the merge saw them; a
    channel left out recalled none of them (the impressions log the same). Only registered
    channels have a feature: an arm's config is checked against them, a hand-built stand-in
    channel (tests) has none."""
    safe = np.where(items >= 0, items, 0)
    item_cols = {k: getattr(users.items, f) for k, f in ITEM_FIELDS.items()} | dict(users.items.columns)
    ranks = ranks or {}
    raw = {k: getattr(users, f) for k, f in USER_FIELDS.items()} | dict(users.features) | \
        {k: np.asarray(v)[safe] for k, v in item_cols.items()} | \
        {c.name: ranks.get(c.producer.channel, np.full(items.shape, -1, np.int32)) for c in columns_of("candidate")}
    return vectorize(raw, items, np.full(len(users), users.day), users.items.catalog)


# Sample rows vectorised at a time: the transforms' float64 and [rows, H, d] intermediates stay
# bounded (tens of MB) however many samples a day has. Each row's vector depends on that row
# alone (serving computes it in batches of 16), so the chunk size changes no byte.
OFFLINE_CHUNK = 65_536


def offline_vectors(table: pa.Table, catalog: Catalog) -> np.ndarray:
    """Features of sample rows (one item each, every column of the definitions) -> [N, F]."""
    out = np.empty((table.num_rows, len(FEATURES)), np.float32)
    for lo in range(0, table.num_rows, OFFLINE_CHUNK):
        part = table.slice(lo, OFFLINE_CHUNK)
        raw = {name: list_matrix(part.column(name), width(BY_NAME[name])) if name in WIDE else part.column(name).to_numpy()
               for name in part.column_names if name != "u_recent" and name.startswith(("u_", "i_", "rt_", "c_"))}
        raw["u_recent"] = recent_of(part)
        raw = {k: (v[:, None] if k in BY_NAME and BY_NAME[k].entity in ("item", "candidate") else v)
               for k, v in raw.items()}                                                  # items: [n, 1]
        items = part.column("item_id").to_numpy()[:, None]
        out[lo:lo + part.num_rows] = vectorize(raw, items, part.column("day").to_numpy(), catalog)[:, 0, :]
    return out


def recent_of(table: pa.Table) -> np.ndarray:
    """The u_recent lists as [N, RECENT_CLICKS] int64, -1 padded."""
    return list_matrix(table.column("u_recent"), RECENT_CLICKS)


def list_matrix(column: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
    """A list<int64> column as [N, n] int64, -1 padded, from the list offsets (no Python list per row)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out = np.full((len(col), n), -1, np.int64)
    if len(col) == 0:
        return out
    offsets = col.offsets.to_numpy()                                                # [N + 1]
    values = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
    start, length = offsets[:-1], np.minimum(np.diff(offsets), n)                   # [N]
    rows = np.repeat(np.arange(len(col)), length)
    cols = _ranks(length)                                                             # rank within its row
    out[rows, cols] = values[np.repeat(start, length) + cols]
    return out


def user_batch_from_table(table: pa.Table, items: ItemFeatures) -> UserBatch:
    """A UserBatch from sample rows (u_* columns), the offline twin of FeatureStore.user_batch."""
    return UserBatch(
        user_ids=table.column("user_id").to_numpy(),
        impressions=table.column("u_impressions").to_numpy(),
        clicks=table.column("u_clicks").to_numpy(),
        recent=recent_of(table),
        items=items,
    )

