"""components/lake.py: partitioned Parquet, atomic writes, DuckDB views."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import components.lake as lake_module
from components.contracts import SCHEMAS, ContractError, conform
from components.lake import Lake, LakeError, MissingPartitionError


def users(day: int, n: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"day": [day] * n, "user_id": ids, "age_bucket": [i % 6 for i in ids],
                     "region": [i % 8 for i in ids], "created_day": [0] * n})


def test_write_then_read_round_trip(tmp_path):
    lake = Lake(tmp_path)
    t = users(0, 5)
    path = lake.write("users", 0, t)
    assert path == lake.path("users", 0) and path.is_file()
    back = lake.read("users", 0)
    assert back.equals(conform("users", t))
    assert back.schema == SCHEMAS["users"]
    assert lake.days("users") == [0] and lake.has("users", 0) and not lake.has("users", 1)


def test_read_several_days_and_all_days(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    lake.write("users", 2, users(2, 4, start=3))
    assert lake.days("users") == [0, 2]
    assert lake.read("users", [0, 2]).num_rows == 7
    assert lake.read("users", [2]).column("user_id").to_pylist() == [3, 4, 5, 6]
    assert lake.read("users").num_rows == 7
    empty = lake.read("items")
    assert empty.num_rows == 0 and empty.schema == SCHEMAS["items"]


def test_rewriting_a_day_replaces_it(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 1, users(1, 5))
    lake.write("users", 1, users(1, 5))
    assert lake.read("users", 1).num_rows == 5
    lake.write("users", 1, users(1, 2, start=10))
    assert lake.read("users", 1).column("user_id").to_pylist() == [10, 11]
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(2,)]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    lake = Lake(tmp_path)
    for _ in range(3):
        lake.write("users", 0, users(0, 4))
    assert sorted(p.name for p in (tmp_path / "users").iterdir()) == ["day=00000.parquet"]


def test_failed_write_keeps_the_old_partition_and_leaves_no_temp_file(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 4))

    def half_written(table, where, **kwargs):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(lake_module.pq, "write_table", half_written)
    with pytest.raises(OSError, match="disk full"):
        lake.write("users", 0, users(0, 9))
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "users").iterdir()) == ["day=00000.parquet"]
    assert lake.read("users", 0).num_rows == 4


def test_invalid_table_is_not_written(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(ContractError):
        lake.write("users", 0, users(0, 3).drop_columns(["region"]))
    assert not lake.has("users", 0)


def test_missing_day_names_the_table_and_the_day(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    with pytest.raises(MissingPartitionError) as exc:
        lake.read("users", [0, 3])
    msg = str(exc.value)
    assert "'users'" in msg
    assert "day 3" in msg
    assert isinstance(exc.value, LakeError)
    with pytest.raises(MissingPartitionError, match="'impressions'.*day 0"):
        lake.read("impressions", 0)


def test_unknown_table_is_named(tmp_path):
    with pytest.raises(LakeError, match="'userz'"):
        Lake(tmp_path).read("userz", 0)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_partition_is_a_lake_error_naming_the_file(tmp_path, keep):
    lake = Lake(tmp_path)
    path = lake.write("users", 0, users(0, 50))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(LakeError) as exc:
        lake.read("users", 0)
    assert str(path) in str(exc.value)
    assert "corrupt or truncated" in str(exc.value)


def test_garbage_partition_is_a_lake_error_naming_the_file(tmp_path):
    lake = Lake(tmp_path)
    path = lake.path("users", 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(LakeError, match=str(path).replace(".", r"\.")):
        lake.read("users", 0)


@pytest.mark.parametrize("metadata", [{b"reclab.schema_version": b"999"}, None])
def test_partition_of_another_schema_version_is_refused(tmp_path, metadata):
    lake = Lake(tmp_path)
    path = lake.path("users", 0)
    path.parent.mkdir(parents=True)
    pq.write_table(conform("users", users(0, 3)).replace_schema_metadata(metadata), path)
    with pytest.raises(LakeError) as exc:
        lake.read("users", 0)
    msg = str(exc.value)
    assert str(path) in msg
    assert "version" in msg
    if metadata:
        assert "999" in msg


def test_rows_of_another_day_are_refused(tmp_path):
    lake = Lake(tmp_path)
    mixed = pa.concat_tables([users(1, 2), users(2, 2, start=2)])
    with pytest.raises(LakeError) as exc:
        lake.write("users", 1, mixed)
    assert "[1, 2]" in str(exc.value) and "day=1" in str(exc.value)
    with pytest.raises(LakeError):
        lake.write("users", 1, users(0, 2))
    assert lake.days("users") == []


def test_connect_exposes_a_view_per_written_table(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    lake.write("users", 1, users(1, 2, start=3))
    with lake.connect() as con:
        rows = con.sql("SELECT day, count(*) FROM users GROUP BY day ORDER BY day").fetchall()
        assert rows == [(0, 3), (1, 2)]
        assert con.sql("SELECT max(user_id) FROM users").fetchall() == [(4,)]
        with pytest.raises(duckdb.CatalogException):
            con.sql("SELECT * FROM impressions").fetchall()     # no partitions, no view
    # a view reads the lake as it is now: a new day is seen by a new connection
    lake.write("users", 2, users(2, 1, start=5))
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(6,)]


def test_refresh_catalog_writes_a_duckdb_file_with_the_views(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    path = lake.refresh_catalog()
    assert path == tmp_path / "catalog.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(3,)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_connect_refuses_a_damaged_partition_naming_it_and_the_rebuild(tmp_path, damage):
    lake = Lake(tmp_path / "lake")
    lake.write("users", 0, users(0, 5))
    path = lake.write("users", 1, users(1, 50, start=5))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet" * 40, "empty": b""}[damage])
    with pytest.raises(LakeError) as exc:
        lake.connect()
    msg = str(exc.value)
    assert str(path) in msg and "corrupt or truncated" in msg
    assert f"reclab run-day --day 1 --data-dir {tmp_path}" in msg
    assert len(msg.splitlines()) == 1


def test_connect_refuses_another_schema_version(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    path = lake.path("users", 1)
    pq.write_table(conform("users", users(1, 3)).replace_schema_metadata({b"reclab.schema_version": b"1"}), path)
    with pytest.raises(LakeError, match=r"users/day=00001\.parquet was written with lake schema version 1"):
        lake.connect()


def test_connect_refuses_columns_that_differ_from_the_contract(tmp_path):
    lake = Lake(tmp_path)
    path = lake.path("users", 0)
    path.parent.mkdir(parents=True)
    wrong = users(0, 3).drop_columns(["region"]).replace_schema_metadata(
        {b"reclab.schema_version": str(lake_module.SCHEMA_VERSION).encode()})
    pq.write_table(wrong, path)
    for read in (lambda: lake.read("users", 0), lake.connect):
        with pytest.raises(LakeError, match="has columns .*region"):
            read()


def test_flipped_bit_inside_the_data_is_caught_by_page_checksums(tmp_path):
    lake = Lake(tmp_path)
    path = lake.write("users", 0, pa.table({
        "day": [0] * 5000, "user_id": range(5000), "age_bucket": [i * 7919 % 1000 for i in range(5000)],
        "region": [i % 8 for i in range(5000)], "created_day": [0] * 5000}))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF               # inside a data page: the footer stays intact
    path.write_bytes(bytes(data))
    with pytest.raises(LakeError, match="corrupt or truncated"):
        lake.read("users", 0)


def test_partition_checks_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    lake.connect().close()
    calls = []
    real = lake_module._verify_pages
    monkeypatch.setattr(lake_module, "_verify_pages", lambda n, p: calls.append(p) or real(n, p))
    lake.connect().close()
    assert calls == []                          # unchanged: one stat(), nothing read
    lake.write("users", 0, users(0, 4))
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(4,)]
    assert len(calls) == 1


def test_rewriting_the_same_rows_gives_the_same_bytes(tmp_path):
    lake = Lake(tmp_path)
    first = lake.write("users", 0, users(0, 20)).read_bytes()
    assert lake.write("users", 0, users(0, 20)).read_bytes() == first


def test_views_never_read_temp_files_and_temp_files_can_be_swept(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    left = [tmp_path / "users" / ".day=00001.parquet.0123abcd.tmp", tmp_path / ".catalog.0123abcd.duckdb"]
    left[0].write_bytes(b"PAR1 half a file")
    left[1].write_bytes(b"")
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(3,)]
    assert lake.days("users") == [0]
    assert lake.temp_files() == sorted(left)
    assert lake.remove_temp_files() == sorted(left)
    assert lake.temp_files() == [] and lake.has("users", 0)


def _zero_middle(path, n=64):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(n)
    path.write_bytes(bytes(data))


def _many_users(day: int, n: int = 20000) -> pa.Table:
    ids = list(range(n))
    return pa.table({"day": [day] * n, "user_id": ids, "age_bucket": [i * 7919 % 1000 for i in ids],
                     "region": [i * 31 % 8 for i in ids], "created_day": [i * 104729 % 977 for i in ids]})


def test_zeroed_span_inside_the_pages_is_refused_when_views_are_built(tmp_path):
    # The footer is intact, so a footer check passes; DuckDB checks no page checksums and would
    # fail inside the query (or read garbage), far from any hint of which file to rebuild.
    lake = Lake(tmp_path / "lake")
    keep = lake.write("users", 0, _many_users(0))
    path = lake.write("users", 1, _many_users(1))
    pq.read_schema(path)
    _zero_middle(path)
    pq.read_schema(path)                        # still a valid footer
    kept = keep.read_bytes()
    with pytest.raises(LakeError) as exc:
        lake.connect()
    msg = str(exc.value)
    assert str(path) in msg and "corrupt or truncated" in msg and len(msg.splitlines()) == 1
    assert f"reclab run-day --day 1 --data-dir {tmp_path}" in msg
    assert keep.read_bytes() == kept            # the other partition is neither rewritten nor touched
    path.unlink()                               # the hint's first step: the rest of the lake reads again
    with lake.connect() as con:
        assert con.sql("SELECT count(*) FROM users").fetchall() == [(20000,)]


def test_a_table_without_partitions_is_missing_not_a_python_object_of_that_name(tmp_path):
    lake = Lake(tmp_path)
    lake.write("users", 0, users(0, 3))
    ab_daily = object()  # noqa: F841 - what DuckDB's replacement scan would pick up from this frame
    with lake.connect() as con:
        with pytest.raises(duckdb.CatalogException, match="ab_daily does not exist"):
            con.sql("SELECT * FROM ab_daily").fetchall()


def test_a_day_that_lost_one_of_its_tables_is_named(tmp_path):
    lake = Lake(tmp_path / "lake")
    for day in range(3):
        lake.write("users", day, users(day, 2, start=10 * day))
    lake.require_whole_days([0, 1, 2])          # tables on no day (ab_daily here) are not asked for
    lake.path("users", 1).unlink()
    with pytest.raises(MissingPartitionError) as exc:
        lake.require_whole_days([0, 1, 2])
    msg = str(exc.value)
    assert str(lake.path("users", 1)) in msg and f"reclab run-day --day 1 --data-dir {tmp_path}" in msg
    lake.require_whole_days([0, 2])
