"""Daily sample building: impressions joined to the features as they were at request time."""
from __future__ import annotations

import pyarrow as pa

from components.lake import Lake, MissingPartitionError


def build_samples(lake: Lake, day: int) -> pa.Table:
    """Write and return the samples of `day`.

    ASOF JOIN picks, per impression, the latest feature row with as_of <= the request's ts, so a
    feature can never carry information from after its request.
    """
    for table in ("impressions", "features_user", "features_item"):
        if not lake.has(table, day):
            raise MissingPartitionError(
                f"cannot build samples for day {day}: table '{table}' has no partition for that "
                f"day in {lake.root}; simulate the day (and build its features) first"
            )
    con = lake.connect()
    samples = con.sql(f"""
        SELECT i.day, i.ts, i.request_id, i.user_id, i.item_id, i.position,
               i.clicked::TINYINT AS label,
               fu.as_of AS u_as_of, fu.u_impressions, fu.u_clicks, fu.u_recent,
               fi.as_of AS i_as_of, fi.i_impressions, fi.i_clicks
        FROM (SELECT * FROM impressions WHERE day = {day}) i
        ASOF JOIN features_user fu ON i.user_id = fu.user_id AND fu.as_of <= i.ts
        ASOF JOIN features_item fi ON i.item_id = fi.item_id AND fi.as_of <= i.ts
        ORDER BY i.ts, i.request_id, i.position
    """).to_arrow_table()
    con.close()
    lake.write("samples", day, samples)
    return samples
