"""Exposure and diversity per arm and day: what real stacks watch beside CTR.

A recommender can raise CTR by showing everyone the same few items; the simulator is where the
cost of that shows. From the impressions the recommender logged (never the world's truth):
distinct items shown and clicked, how concentrated exposure is over the catalogue (Gini over
every item known that day, unshown items counting zero; the top 1 % of items' share of
impressions), and the share of impressions personalised: items outside that day's K most shown
items over all arms, K the slate size.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.lake import Lake


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all equal, towards 1 when one takes all."""
    x = np.sort(np.asarray(counts, float))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((n + 1 - 2 * np.sum(np.cumsum(x)) / total) / n)


def exposure_daily(lake: Lake, day: int) -> pa.Table:
    """Write and return the day's exposure_daily table (one row per arm)."""
    with lake.connect() as con:
        shown = con.sql(f"""SELECT arm, item_id, count(*) AS shown, count(*) FILTER (WHERE clicked) AS clicks
                            FROM impressions WHERE day = {int(day)} GROUP BY arm, item_id""").df()
        n_items = con.sql(f"SELECT count(DISTINCT item_id) FROM items WHERE day <= {int(day)}").fetchall()[0][0]
        slate = con.sql(f"SELECT coalesce(max(position), 0) + 1 FROM impressions WHERE day = {int(day)}").fetchall()[0][0]
    overall = shown.groupby("item_id")["shown"].sum().sort_values(ascending=False, kind="stable")
    top_k = set(overall.index[:int(slate)].tolist())
    rows = []
    for arm, g in sorted(shown.groupby("arm"), key=lambda kv: kv[0]):
        counts = np.zeros(max(int(n_items), len(g)))
        counts[:len(g)] = g["shown"].to_numpy()
        top1 = max(len(counts) // 100, 1)
        rows.append({"day": int(day), "arm": str(arm), "impressions": int(g["shown"].sum()),
                     "items_shown": int(len(g)), "items_clicked": int((g["clicks"] > 0).sum()),
                     "catalogue": int(n_items), "gini": round(gini(counts), 10),
                     "top1pct_share": round(float(np.sort(counts)[::-1][:top1].sum() / max(counts.sum(), 1)), 10),
                     "personalised_share": round(float(g.loc[~g["item_id"].isin(top_k), "shown"].sum()
                                                       / max(g["shown"].sum(), 1)), 10)})
    table = pa.Table.from_pylist(rows) if rows else None
    if table is not None:
        lake.write("exposure_daily", day, table)
    return table
