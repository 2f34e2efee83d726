"""Daily sample building: impressions joined to the features as they were at request time."""
from __future__ import annotations

import tempfile

from components.features.columns import columns_of, item_stream_sql, stream_sql
from components.lake import Lake, MissingPartitionError


def samples_sql(day: int) -> str:
    """The samples of `day`, every column named by the feature definitions.

    ASOF JOIN picks, per impression, the latest daily feature row with as_of <= the request's ts;
    the stream columns count only events of micro-batches closed before the request's own began.
    Neither can carry information from after its request. The candidate columns are what serving
    logged with the impression itself."""
    user = ", ".join(f"fu.{c.name}" for c in columns_of("features_user"))
    item = ", ".join(f"fi.{c.name}" for c in columns_of("features_item"))
    stream = ", ".join([*(f"rt.{c.name}" for c in columns_of("stream")),
                        *(f"rti.{c.name}" for c in columns_of("stream_item"))])
    candidate = ", ".join(f"{c.producer.select('i')} AS {c.name}" for c in columns_of("candidate"))
    requests = f"(SELECT DISTINCT request_id, user_id, ts FROM impressions WHERE day = {day})"
    events = f"(SELECT user_id, item_id, ts, clicked FROM impressions WHERE day BETWEEN {day - 1} AND {day})"
    shown = f"(SELECT request_id, item_id, ts FROM impressions WHERE day = {day})"
    return f"""
        SELECT i.day, i.ts, i.request_id, i.user_id, i.item_id, i.position,
               i.clicked::TINYINT AS label,
               fu.as_of AS u_as_of, {user}, fi.as_of AS i_as_of, {item}, {stream},
               {candidate}
        FROM (SELECT * FROM impressions WHERE day = {day}) i
        ASOF JOIN features_user fu ON i.user_id = fu.user_id AND fu.as_of <= i.ts
        ASOF JOIN features_item fi ON i.item_id = fi.item_id AND fi.as_of <= i.ts
        JOIN ({stream_sql(requests, events)}) rt ON rt.request_id = i.request_id
        JOIN ({item_stream_sql(shown, events)}) rti ON rti.request_id = i.request_id AND rti.item_id = i.item_id
        ORDER BY i.ts, i.request_id, i.position
    """


# DuckDB's working memory for the join and sort of a day's samples; past it, it spills to disk.
# Its default (80 % of the machine) lets one large day take the memory of a shared machine.
MEMORY_LIMIT = "1GB"
BATCH_ROWS = 1_000_000    # the result batches to_arrow_table would make, so the file's bytes match


def build_samples(lake: Lake, day: int) -> int:
    """Write the samples of `day`, streamed from the query to the partition; returns their rows."""
    for table in ("impressions", "features_user", "features_item"):
        if not lake.has(table, day):
            raise MissingPartitionError(
                f"cannot build samples for day {day}: table '{table}' has no partition for that "
                f"day in {lake.root}; simulate the day (and build its features) first"
            )
    with tempfile.TemporaryDirectory(prefix="reclab-samples-") as spill, lake.connect() as con:
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = '{spill}'")
        reader = con.sql(samples_sql(day)).to_arrow_reader(BATCH_ROWS)
        return lake.write_stream("samples", day, reader)[1]
