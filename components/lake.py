"""The lake: one Parquet file per table and day, written atomically, read through DuckDB views."""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from components.contracts import SCHEMA_VERSION, SCHEMAS, conform

_PARTITION = re.compile(r"^day=(\d+)\.parquet$")
_TEMP = re.compile(r"^\.(day=\d+\.parquet\..*\.tmp|catalog\..*\.duckdb)$")
_VERSION_KEY = b"reclab.schema_version"
ROW_GROUP = 1024 * 1024   # rows per row group: pq.write_table's default, which `write` uses

# Partitions already verified whole (footer, schema, every page's checksum), by (path, mtime, size,
# inode): a rewritten file changes at least one of these, so it is verified again; an unchanged one
# costs one stat(). DuckDB checks no page checksums, so without this a damaged page reaches a query
# as a decompression traceback, or as silently wrong rows where the damage still decompresses.
_VERIFIED: set[tuple[str, int, int, int]] = set()
_VERIFIED_CACHE_LIMIT = 100_000


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
        The bytes depend only on the rows: the same rows give the same file, so a re-run day can
        be compared byte for byte.
        """
        table = conform(name, table)
        days = set(table.column("day").unique().to_pylist())
        if days - {day}:
            raise LakeError(f"table '{name}': rows for days {sorted(days)} written to partition day={day}")
        table = table.replace_schema_metadata({_VERSION_KEY: str(SCHEMA_VERSION).encode()})
        target = self.path(name, day)
        with _replacing(target) as tmp:
            pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
        return target

    def write_stream(self, name: str, day: int, parts: Iterable[pa.Table | pa.RecordBatch]) -> tuple[Path, int]:
        """`write` for a table that arrives in parts (a query's result batches), holding at most
        a row group of it; returns the path and the rows written.

        The parts are cut into row groups exactly where `pq.write_table` cuts the whole table
        (every ROW_GROUP rows, each a slice of the same parts), so the file is byte for byte the
        one `write` gives for the concatenated parts.
        """
        schema = SCHEMAS[name].with_metadata({_VERSION_KEY: str(SCHEMA_VERSION).encode()})
        target = self.path(name, day)
        rows = 0
        with _replacing(target) as tmp:
            with pq.ParquetWriter(tmp, schema, compression="zstd", write_page_checksum=True) as writer:
                buffer: list[pa.Table] = []
                held = groups = 0
                for part in parts:
                    table = conform(name, pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part)
                    days = set(table.column("day").unique().to_pylist())
                    if days - {day}:
                        raise LakeError(f"table '{name}': rows for days {sorted(days)} written to partition day={day}")
                    buffer.append(table)
                    held += table.num_rows
                    while held >= ROW_GROUP:
                        whole = pa.concat_tables(buffer)
                        writer.write_table(whole.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                        buffer, held, groups = [whole.slice(ROW_GROUP)], held - ROW_GROUP, groups + 1
                    rows += table.num_rows
                if held or not groups:       # write_table of an empty table writes one empty group
                    whole = pa.concat_tables(buffer) if buffer else schema.empty_table()
                    writer.write_table(whole, row_group_size=ROW_GROUP)
        return target, rows

    def read(self, name: str, days: int | Iterable[int] | None = None) -> pa.Table:
        """Rows of the given days (all days when None); a missing day is an error, not empty."""
        if name not in SCHEMAS:
            raise LakeError(f"unknown table '{name}'; known tables are {sorted(SCHEMAS)}")
        wanted = self.days(name) if days is None else [days] if isinstance(days, int) else list(days)
        self.require(name, wanted)
        parts = [self._read_file(name, self.path(name, day)) for day in wanted]
        if not parts:
            return SCHEMAS[name].empty_table()
        return pa.concat_tables(parts)

    def read_batches(self, name: str, days: Iterable[int], rows: int = 65_536,
                     columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rows of `days` in order, `rows` at a time (each partition verified first, as `read`
        does): a reader that keeps only what it makes of them holds one batch, not the partition."""
        days = list(days)
        self.require(name, days)
        for day in days:
            path = self.check(name, day)
            try:
                with pq.ParquetFile(path, page_checksum_verification=True) as pf:
                    for batch in pf.iter_batches(batch_size=rows, columns=columns):
                        yield pa.Table.from_batches([batch])
            except (pa.ArrowException, OSError) as exc:
                raise _corrupt(path, exc) from None

    def require(self, name: str, days: Iterable[int]) -> None:
        """Refuse, naming the first missing partition and its rebuild, unless all of `days` exist."""
        for day in days:
            path = self.path(name, day)
            if not path.is_file():
                raise MissingPartitionError(
                    f"table '{name}' has no partition for day {day}: {path} is missing (present: "
                    f"{self.days(name) or 'none'}); run that day, e.g. {_run_day(path, day)}")

    def require_whole_days(self, days: Iterable[int]) -> None:
        """Refuse, naming the first lost partition, unless every table that has a partition on one
        of `days` has one on each of them: days a campaign keeps must not have lost a table."""
        days = list(days)
        for name in SCHEMAS:
            present = set(self.days(name))
            if present & set(days):
                self.require(name, days)

    def _read_file(self, name: str, path: Path) -> pa.Table:
        """The whole partition, its page checksums verified: a flipped bit is caught here too."""
        try:
            table = pq.read_table(path, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(path, exc) from None
        _check_schema(name, path, table.schema)
        return conform(name, table.replace_schema_metadata(None))

    def check(self, name: str, day: int) -> Path:
        """Verify a partition whole, once per process while it is unchanged: its footer, schema
        version and columns, then every page's checksum (the pages are read, one row group at a
        time, and dropped)."""
        path = self.path(name, day)
        try:
            st = path.stat()
        except OSError as exc:
            raise MissingPartitionError(f"table '{name}' has no partition for day {day} in "
                                        f"{self.root} ({exc.strerror})") from None
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)
        if key in _VERIFIED:
            return path
        _verify_pages(name, path)
        if len(_VERIFIED) >= _VERIFIED_CACHE_LIMIT:
            _VERIFIED.clear()
        _VERIFIED.add(key)
        return path

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with a view per table that has partitions.

        Each view lists the partitions present now, each verified first (`check`), so a truncated
        or damaged file, or one from another reclab, fails here, naming the file and its rebuild,
        rather than somewhere inside a query or silently read with another meaning.
        """
        # Checked before DuckDB is touched: a refusal then holds no connection in its traceback (one
        # kept alive until exit, e.g. in a failed Prefect state, makes DuckDB print leak warnings).
        tables = {name: [self.check(name, day) for day in self.days(name)] for name in SCHEMAS}
        con = duckdb.connect()
        try:
            # Without this, a table with no partitions yet resolves to any Python object of that name
            # in the calling frame (reports.ab_daily is a function): an error naming the wrong thing.
            con.execute("SET python_enable_replacements = false")
            for name, files in tables.items():
                if files:
                    con.sql(f"CREATE VIEW {name} AS {_files_sql(files)}")
        except BaseException:
            con.close()
            raise
        return con

    def refresh_catalog(self) -> Path:
        """Write `catalog.duckdb`: views over each table's folder, for the DuckDB CLI or a notebook."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / "catalog.duckdb"
        tmp = self.root / f".catalog.{uuid.uuid4().hex}.duckdb"
        try:
            with duckdb.connect(str(tmp)) as con:
                for name in SCHEMAS:
                    if self.days(name):
                        glob = _quote(str((self.root / name).resolve() / "day=*.parquet"))
                        con.sql(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({glob})")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def temp_files(self) -> list[Path]:
        """Files a writer left behind when it was killed mid-write; no reader ever opens them."""
        if not self.root.is_dir():
            return []
        folders = [self.root, *(self.root / name for name in SCHEMAS)]
        return sorted(p for f in folders if f.is_dir() for p in f.iterdir() if _TEMP.match(p.name))

    def remove_temp_files(self) -> list[Path]:
        """Delete what `temp_files` lists; only safe while no other process writes this lake."""
        found = self.temp_files()
        for path in found:
            path.unlink(missing_ok=True)
        return found


def _check_schema(name: str, path: Path, schema: pa.Schema) -> None:
    version = (schema.metadata or {}).get(_VERSION_KEY, b"?").decode(errors="replace")
    if version != str(SCHEMA_VERSION):
        raise LakeError(
            f"partition {path} was written with lake schema version {version}, this reclab "
            f"reads version {SCHEMA_VERSION}; start a fresh lake (another --data-dir, or --fresh) "
            f"or re-run the campaign with the reclab that wrote it"
        )
    expected = SCHEMAS[name]
    if schema.remove_metadata() != expected:
        got = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise LakeError(
            f"partition {path} has columns ({got}), table '{name}' of schema version "
            f"{SCHEMA_VERSION} has ({', '.join(f'{f.name}: {f.type}' for f in expected)}); "
            f"{_rebuild_hint(path)}"
        )


def _verify_pages(name: str, path: Path) -> None:
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as pf:
            schema = pf.schema_arrow
            for i in range(pf.num_row_groups):
                pf.read_row_group(i)
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, exc) from None
    _check_schema(name, path, schema)


def _corrupt(path: Path, exc: BaseException) -> LakeError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LakeError(f"partition {path} is corrupt or truncated ({reason}); {_rebuild_hint(path)}")


def _rebuild_hint(path: Path) -> str:
    m = _PARTITION.match(path.name)
    day = int(m.group(1)) if m else None
    if day is None:
        return "delete it and re-run the day it belongs to"
    return (f"delete it and re-run day {day} to rebuild it ({_run_day(path, day)}; a re-run day is "
            f"rebuilt byte for byte)")


def _run_day(path: Path, day: int) -> str:
    data_dir = path.parent.parent.parent      # <data dir>/lake/<table>/day=<d>.parquet
    return f"`reclab run-day --day {day} --data-dir {data_dir}`"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _files_sql(files: list[Path]) -> str:
    listed = ", ".join(_quote(str(p.resolve())) for p in files)
    return f"SELECT * FROM read_parquet([{listed}])"


@contextmanager
def _replacing(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`; once the body has written it, it is synced and renamed
    over `target` (a reader sees the old file or the new one), and removed if the body fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable: without it a power cut can bring back the old partition."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
