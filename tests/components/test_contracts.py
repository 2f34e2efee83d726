"""components/contracts.py: tables that cross a stage boundary fit their schema."""
from __future__ import annotations

import pyarrow as pa
import pytest

from components.contracts import SCHEMAS, STAGES, ContractError, conform


def users_table(**overrides) -> pa.Table:
    cols = {"day": [0, 0], "user_id": [1, 2], "age_bucket": [3, 4], "region": [0, 1], "created_day": [0, 0]}
    cols.update(overrides)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def test_conform_casts_to_the_contract_types():
    out = conform("users", users_table())
    assert out.schema == SCHEMAS["users"]
    assert out.column("age_bucket").to_pylist() == [3, 4]


def test_conform_puts_columns_in_contract_order():
    t = users_table()
    shuffled = t.select(list(reversed(t.column_names)))
    assert conform("users", shuffled).column_names == SCHEMAS["users"].names


def test_missing_column_is_named():
    with pytest.raises(ContractError) as exc:
        conform("users", users_table(region=None))
    msg = str(exc.value)
    assert "'users'" in msg
    assert "missing columns ['region']" in msg


def test_extra_column_is_named():
    with pytest.raises(ContractError) as exc:
        conform("users", users_table(nickname=["a", "b"]))
    msg = str(exc.value)
    assert "'users'" in msg
    assert "unexpected columns ['nickname']" in msg


def test_null_in_a_required_column_is_a_contract_error():
    with pytest.raises(ContractError) as exc:
        conform("users", users_table(age_bucket=[1, None]))
    msg = str(exc.value)
    assert "'users'" in msg
    assert "'age_bucket'" in msg
    assert "required" in msg


def test_null_in_a_nullable_column_is_allowed():
    row = {"day": 0, "experiment": "e", "arm": "control", "is_control": True, "share": 50.0,
           "users": 10, "requests": 12, "impressions": 120, "clicks": 6, "ctr": 0.05,
           "ctr_ci_low": 0.01, "ctr_ci_high": 0.09, "lift": None, "lift_ci_low": None,
           "lift_ci_high": None, "p_value": None, "srm_p": 0.7}
    row |= {f.name: None for f in SCHEMAS["ab_daily"] if f.nullable and f.name not in row}
    out = conform("ab_daily", pa.Table.from_pylist([row]))
    assert out.column("lift").null_count == 1


def test_uncastable_type_is_a_contract_error():
    with pytest.raises(ContractError, match="'users' does not fit its schema"):
        conform("users", users_table(age_bucket=["young", "old"]))


def test_unknown_table_is_named():
    with pytest.raises(ContractError) as exc:
        conform("userz", users_table())
    assert "'userz'" in str(exc.value)
    assert "users" in str(exc.value)


def test_every_table_is_partitioned_by_day_and_latency_columns_follow_the_stages():
    for name, schema in SCHEMAS.items():
        assert schema.field("day").type == pa.int32(), name
    assert [f"{s}_ms" for s in STAGES] == [n for n in SCHEMAS["request_latency"].names if n.endswith("_ms")]
