"""Stored feature columns, each defined once with what produces it.

A column's producer writes the DuckDB expression that computes it offline (the daily feature
tables and the samples) and tells the online side what to keep: the FeatureStore loads the daily
columns by name, the StreamProcessor counts the stream columns. No column is written twice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400
RECENT_CLICKS = 20
# The stream: events become visible when the micro-batch they belong to closes; a real-time
# count covers the last REALTIME_BATCHES closed micro-batches (one hour).
MICRO_BATCH_SECONDS = 900
REALTIME_BATCHES = 4
# An organic take (the `organic` table) joins the events as a clicked row at its visit's ts, after
# every slot of the slate; counts of impressions and clicks leave it out, the recent items keep it.
ORGANIC_POSITION = 1 << 20
# A user's takes in time order, one key for every reader (training sequences, co-click pairs):
# two requests can share a second, and a sort left with ties orders them differently run to run.
TAKE_ORDER = "ts, request_id, position"


@dataclass(frozen=True)
class EventCount:
    """Impressions (or clicks) of the entity over the `days` days before as_of; None: all earlier days."""

    clicks: bool
    days: int | None
    empty = "0"

    def aggregate(self, as_of: int) -> str:
        cond = ["NOT organic"] + (["clicked"] if self.clicks else []) + \
            ([f"ts >= {as_of - self.days * SECONDS_PER_DAY}"] if self.days is not None else [])
        return f"count(*) FILTER (WHERE {' AND '.join(cond)})"


@dataclass(frozen=True)
class LastClicks:
    """The entity's last `n` clicked or organically taken items, newest first; within a request,
    the organic take first, then the slate's click. Two requests of one user can share a second:
    the later request id is the newer (a sort left with ties orders them differently run to run)."""

    n: int
    empty = "[]::BIGINT[]"

    def aggregate(self, as_of: int) -> str:
        return f"list(item_id ORDER BY ts DESC, request_id DESC, organic DESC, position) FILTER (WHERE clicked)[1:{self.n}]"


@dataclass(frozen=True)
class CoClicked:
    """The item's `n` strongest co-clicked items over the `days` days before as_of: in each user's
    time-ordered takes (clicks and organic), every two at most `pair_window` apart pair up both
    ways with weight 1 / distance; strongest first, ties by id. Fixed width: -1 padded."""

    n: int
    days: int
    pair_window: int
    empty = "[]::BIGINT[]"

    def sequences(self, events: str, as_of: int) -> str:
        """The CTEs the subquery reads: each user's takes in time order, and their pairs one way."""
        # Weights as integers (1 / distance scaled by lcm(1..pair_window)): a float sum's value
        # depends on the threads' order, and a last-bit difference reorders tied neighbours.
        scale = math.lcm(*range(1, self.pair_window + 1))
        return f"""seq AS (SELECT user_id, item_id,
                              row_number() OVER (PARTITION BY user_id ORDER BY {TAKE_ORDER}) AS k
                       FROM {events} WHERE clicked AND ts >= {as_of - self.days * SECONDS_PER_DAY}),
                pairs AS (SELECT a.item_id AS i, b.item_id AS j, {scale} // (b.k - a.k) AS w
                          FROM seq a JOIN seq b ON a.user_id = b.user_id
                               AND b.k > a.k AND b.k <= a.k + {self.pair_window})"""

    def subquery(self, name: str) -> str:
        return f"""
            SELECT i AS item_id, list(j ORDER BY w DESC, j)[1:{self.n}] AS {name} FROM (
                SELECT i, j, sum(w) AS w
                FROM (SELECT i, j, w FROM pairs UNION ALL SELECT j, i, w FROM pairs)
                WHERE i <> j GROUP BY i, j)
            GROUP BY i"""


@dataclass(frozen=True)
class CatalogField:
    """A field of the entity's catalog row (the items table), as published."""

    field: str


@dataclass(frozen=True)
class StreamCount:
    """Impressions (or clicks) of the entity in the micro-batches closed within the last hour.

    At request time t the visible micro-batches are those ending at or before the start of t's own
    micro-batch m = t - t % MICRO_BATCH_SECONDS, so the window is [m - REALTIME_BATCHES *
    MICRO_BATCH_SECONDS, m)."""

    clicks: bool

    def aggregate(self, event: str) -> str:
        return f"count({event}.ts) FILTER (WHERE {event}.clicked)" if self.clicks else f"count({event}.ts)"


@dataclass(frozen=True)
class RecallRank:
    """Where the candidate stood in recall channel `channel`'s own list when it was served (0 the
    top, -1 not recalled by it), logged with the impression (impressions.recall_ranks, aligned with
    impressions.channels): what recall knew of the item, for the ranker."""

    channel: str

    def select(self, impressions: str) -> str:
        # list_position is NULL when the channel did not recall the item, and so is a NULL index.
        return (f"coalesce({impressions}.recall_ranks[list_position({impressions}.channels, '{self.channel}')], -1)"
                f"::INTEGER")


Producer = EventCount | LastClicks | CoClicked | CatalogField | StreamCount | RecallRank


@dataclass(frozen=True)
class Column:
    name: str
    table: str                  # features_user, features_item (daily), stream (per request) or
                                # candidate (per served item, logged with its impression)
    entity: str                 # user, item or candidate
    sources: tuple[str, ...]    # lake tables it is computed from
    window: str
    dtype: str                  # arrow type of the stored column
    description: str
    producer: Producer


def _counts(prefix: str, table: str, entity: str) -> list[Column]:
    out = []
    for days, window in ((None, "all earlier days"), (1, "1 day"), (7, "7 days")):
        suffix = "" if days is None else f"_{days}d"
        for clicks, what in ((False, "impressions"), (True, "clicks")):
            out.append(Column(f"{prefix}_{what}{suffix}", table, entity, ("impressions",), window, "int64",
                              f"{what} of the {entity} over {window} before the serving day",
                              EventCount(clicks, days)))
    return out


COCLICKED = CoClicked(n=20, days=14, pair_window=3)
# Every channel the code has: an arm's channels come from its config, and one ranker learns from
# every arm's impressions, so each channel's rank is a column of its own (-1 where it is not used).
RECALL_CHANNELS = ("popular", "popular_category", "itemcf", "content_i2i", "swing", "two_tower", "sasrec",
                   "coldstart", "explore", "generative")

COLUMNS: tuple[Column, ...] = (
    *_counts("u", "features_user", "user"),
    Column("u_recent", "features_user", "user", ("impressions", "organic"), f"last {RECENT_CLICKS} clicks",
           "list<int64>", "the user's last clicked (or organically taken) items before the serving day, newest first",
           LastClicks(RECENT_CLICKS)),
    *_counts("i", "features_item", "item"),
    Column("i_coclicked", "features_item", "item", ("impressions", "organic"), f"{COCLICKED.days} days",
           "list<int64>", f"the item's {COCLICKED.n} strongest co-clicked items (takes at most "
           f"{COCLICKED.pair_window} apart in a user's sequence, weight 1 / distance) before the serving day",
           COCLICKED),
    Column("i_created_day", "features_item", "item", ("items",), "catalog", "int32",
           "the day the item entered the catalog", CatalogField("created_day")),
    Column("rt_u_impressions_1h", "stream", "user", ("impressions",), "last hour, micro-batches", "int64",
           "the user's impressions in the micro-batches closed within the last hour", StreamCount(False)),
    Column("rt_u_clicks_1h", "stream", "user", ("impressions",), "last hour, micro-batches", "int64",
           "the user's clicks in the micro-batches closed within the last hour", StreamCount(True)),
    # Item-keyed: every shard's users show an item, so these count events of all shards, through a
    # store they share (features/stream.py ItemStream).
    Column("rt_i_impressions_1h", "stream_item", "item", ("impressions",), "last hour, micro-batches", "int64",
           "the item's impressions, all users, in the micro-batches closed within the last hour",
           StreamCount(False)),
    Column("rt_i_clicks_1h", "stream_item", "item", ("impressions",), "last hour, micro-batches", "int64",
           "the item's clicks, all users, in the micro-batches closed within the last hour", StreamCount(True)),
    *(Column(f"c_rank_{ch}", "candidate", "candidate", ("impressions",), "as served", "int32",
             f"the candidate's rank in channel {ch}'s list when served (0 the top, -1 not recalled by it)",
             RecallRank(ch)) for ch in RECALL_CHANNELS),
)
BY_NAME = {c.name: c for c in COLUMNS}


def columns_of(table: str) -> tuple[Column, ...]:
    return tuple(c for c in COLUMNS if c.table == table)


def width(column: Column) -> int:
    """0 for a scalar column; a fixed-width list column's width (its arrays are [rows, width])."""
    return column.producer.n if isinstance(column.producer, CoClicked) else 0


if any(c.entity != "user" for c in columns_of("stream")) or any(c.entity != "item" for c in columns_of("stream_item")):
    # Serving shards by user-id hash: a user's events are whole inside one shard, an item's are not.
    raise ValueError("stream columns are user-level, stream_item columns item-level")


def daily_sql(table: str, day: int, events: str, entities: str) -> str:
    """The DuckDB query of features_user or features_item valid for serving `day`.

    `events`: the impressions before `day`; `entities`: one row per id with its catalog fields."""
    key = {"features_user": "user_id", "features_item": "item_id"}[table]
    as_of = day * SECONDS_PER_DAY
    cols = columns_of(table)
    aggs = [c for c in cols if isinstance(c.producer, (EventCount, LastClicks))]
    pairs = [c for c in cols if isinstance(c.producer, CoClicked)]
    assert len(pairs) <= 1, "one pair column a table: they share the subquery's alias"
    select = [f"x.{c.producer.field} AS {c.name}" if isinstance(c.producer, CatalogField) else
              f"coalesce({'p' if c in pairs else 'e'}.{c.name}, {c.producer.empty}) AS {c.name}" for c in cols]
    # A pair column needs the users' sequences, not one GROUP BY over the entity: its own subquery.
    seq = f"WITH {pairs[0].producer.sequences(events, as_of)}" if pairs else ""
    joins = "".join(f" LEFT JOIN ({c.producer.subquery(c.name)}) p USING ({key})" for c in pairs)
    return f"""
        {seq}
        SELECT {day}::INT AS day, x.{key}, {as_of}::BIGINT AS as_of, {', '.join(select)}
        FROM {entities} x
        LEFT JOIN (SELECT {key}, {', '.join(f'{c.producer.aggregate(as_of)} AS {c.name}' for c in aggs)}
                   FROM {events} GROUP BY {key}) e USING ({key}){joins}
        ORDER BY x.{key}
    """


def stream_sql(requests: str, events: str) -> str:
    """Per request (request_id, user_id, ts), the stream columns as the StreamProcessor served them."""
    span = REALTIME_BATCHES * MICRO_BATCH_SECONDS
    cols = columns_of("stream")
    return f"""
        SELECT r.request_id, {', '.join(f'{c.producer.aggregate("e")} AS {c.name}' for c in cols)}
        FROM {requests} r
        LEFT JOIN {events} e ON e.user_id = r.user_id
             AND e.ts >= r.ts - r.ts % {MICRO_BATCH_SECONDS} - {span}
             AND e.ts < r.ts - r.ts % {MICRO_BATCH_SECONDS}
        GROUP BY r.request_id
    """


def item_stream_sql(shown: str, events: str) -> str:
    """Per shown item (request_id, item_id, ts), the stream_item columns as ItemStream served them:
    the item's events of every user in the same window. Events are counted per (item, micro-batch)
    first and each shown item joins its window's micro-batches by equality: REALTIME_BATCHES rows
    per impression, not a popular item's hour of impressions."""
    cols = columns_of("stream_item")
    mb = MICRO_BATCH_SECONDS
    return f"""
        WITH per_batch AS (
            SELECT item_id, ts // {mb} AS mb, count(*) AS impressions, count(*) FILTER (WHERE clicked) AS clicks
            FROM {events} GROUP BY item_id, ts // {mb})
        SELECT s.request_id, s.item_id,
               {', '.join(f"coalesce(sum(b.{'clicks' if c.producer.clicks else 'impressions'}), 0)::BIGINT AS {c.name}"
                          for c in cols)}
        FROM {shown} s
        CROSS JOIN (SELECT unnest(range(1, {REALTIME_BATCHES + 1})) AS back) w
        LEFT JOIN per_batch b ON b.item_id = s.item_id AND b.mb = s.ts // {mb} - w.back
        GROUP BY s.request_id, s.item_id
    """
