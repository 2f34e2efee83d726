"""What checking every partition costs when `Lake.connect()` builds its views.

Measures, on an existing campaign's lake: views over a glob with no checks (what a reader would
do without them), `connect()` the first time in a process (every partition read whole, its page
checksums verified), and `connect()` again (one stat() per partition: the verdicts are cached by
path, mtime, size and inode).
Each is timed `--repeats` times; the table shows the medians. A query over `impressions` is run
after each connect, so the numbers include what a reader pays before its first row.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import duckdb

import components.lake as lake_module
from bench.results import append, conditions, conditions_note
from components.contracts import SCHEMAS
from components.lake import Lake

QUERY = "SELECT count(*), sum(clicked::INT) FROM impressions"


def unchecked(lake: Lake) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name in SCHEMAS:
        if lake.days(name):
            glob = str((lake.root / name).resolve() / "day=*.parquet").replace("'", "''")
            con.sql(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}')")
    return con


def timed(connect, cold: bool) -> float:
    if cold:
        lake_module._VERIFIED.clear()
    start = time.perf_counter()
    with connect() as con:
        con.sql(QUERY).fetchall()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", required=True, help="a campaign's data directory")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    lake = Lake(Path(args.data_dir) / "lake")
    paths = [lake.path(name, day) for name in SCHEMAS for day in lake.days(name)]
    files, size = len(paths), sum(p.stat().st_size for p in paths)
    load_before = os.getloadavg()
    timed(lake.connect, cold=True)          # warm the page cache and DuckDB itself
    rows = []
    for label, connect, cold in (("glob views, no checks", lambda: unchecked(lake), False),
                                 ("connect(), pages verified (first in a process)", lake.connect, True),
                                 ("connect(), verified before (cached)", lake.connect, False)):
        ms = [timed(connect, cold) for _ in range(args.repeats)]
        rows.append([label, f"{statistics.median(ms):.1f}", f"{min(ms):.1f}", f"{max(ms):.1f}"])
    append(f"Lake.connect() verifying every page checksum, {files} partitions, {size / 1e6:.1f} MB "
           f"({args.data_dir})", ["views", "median ms", "min ms", "max ms"], rows,
           notes=f"median of {args.repeats} runs, each connect + `{QUERY}`; "
                 f"{conditions_note(conditions(load_before))}")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
