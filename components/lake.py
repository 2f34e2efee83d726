"""The lake: one Parquet file per table and day, written atomically, read through DuckDB views."""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from components.contracts import SCHEMA_VERSION, SCHEMAS, conform

_PARTITION = re.compile(r"^day=(\d+)\.parquet$")
_VERSION_KEY = b"reclab.schema_version"


class LakeError(RuntimeError):
    """Something in the lake is missing or unreadable; the message says how to fix it."""


class MissingPartitionError(LakeError):
    pass


class Lake:
    """Partitioned Parquet under `root`: `root/<table>/day=<d>.parquet`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, table: str, day: int) -> Path:
        return self.root / table / f"day={day:05d}.parquet"

    def days(self, table: str) -> list[int]:
        folder = self.root / table
        if not folder.is_dir():
            return []
        found = (_PARTITION.match(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def has(self, table: str, day: int) -> bool:
        return self.path(table, day).is_file()

    def write(self, name: str, day: int, table: pa.Table) -> Path:
        """Validate `table` against its contract and replace the day's partition atomically.

        The file is written beside its target and renamed over it, so a reader sees the old
        partition or the new one, never half of one, and a re-run replaces instead of appending.
        """
        table = conform(name, table)
        days = set(table.column("day").unique().to_pylist())
        if days - {day}:
            raise LakeError(f"table '{name}': rows for days {sorted(days)} written to partition day={day}")
        table = table.replace_schema_metadata({_VERSION_KEY: str(SCHEMA_VERSION).encode()})
        target = self.path(name, day)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def read(self, name: str, days: int | Iterable[int] | None = None) -> pa.Table:
        """Rows of the given days (all days when None); a missing day is an error, not empty."""
        if name not in SCHEMAS:
            raise LakeError(f"unknown table '{name}'; known tables are {sorted(SCHEMAS)}")
        wanted = self.days(name) if days is None else [days] if isinstance(days, int) else list(days)
        parts = []
        for day in wanted:
            path = self.path(name, day)
            if not path.is_file():
                raise MissingPartitionError(
                    f"table '{name}' has no partition for day {day} in {self.root} "
                    f"(present: {self.days(name) or 'none'}); run that day first, e.g. "
                    f"`reclab run-day --day {day}` for the same campaign"
                )
            parts.append(self._read_file(name, path))
        if not parts:
            return SCHEMAS[name].empty_table()
        return pa.concat_tables(parts)

    def _read_file(self, name: str, path: Path) -> pa.Table:
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LakeError(
                f"partition {path} is corrupt or truncated ({exc}); delete it and re-run that day "
                f"to rebuild it"
            ) from None
        version = (table.schema.metadata or {}).get(_VERSION_KEY, b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise LakeError(
                f"partition {path} was written with lake schema version {version}, this reclab "
                f"reads version {SCHEMA_VERSION}; start a fresh lake (another --data-dir) or "
                f"re-run the campaign"
            )
        return conform(name, table.replace_schema_metadata(None))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view per table that has partitions."""
        con = duckdb.connect()
        for name in SCHEMAS:
            if self.days(name):
                con.sql(f"CREATE VIEW {name} AS {self._view_sql(name)}")
        return con

    def _view_sql(self, name: str) -> str:
        glob = str((self.root / name).resolve() / "day=*.parquet").replace("'", "''")
        return f"SELECT * FROM read_parquet('{glob}')"

    def refresh_catalog(self) -> Path:
        """Write `catalog.duckdb`: the same views in a file, for the DuckDB CLI or a notebook."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / "catalog.duckdb"
        tmp = self.root / f".catalog.{uuid.uuid4().hex}.duckdb"
        try:
            with duckdb.connect(str(tmp)) as con:
                for name in SCHEMAS:
                    if self.days(name):
                        con.sql(f"CREATE VIEW {name} AS {self._view_sql(name)}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target
