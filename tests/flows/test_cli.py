"""The reclab command: bad input gets one clear line and exit code 2, before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


def _experiment(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((EXPERIMENTS / "default.yaml").read_text())
    mutate(data)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_config_key(tmp_path, capsys):
    path = _experiment(tmp_path, lambda d: d["arms"]["control"].update(rankr="mlp"))
    assert main(["campaign", "--experiment", str(path), "--data-dir", str(tmp_path / "d")]) == 2
    line = _error(capsys)
    assert "unknown setting 'rankr'" in line and "did you mean 'ranker'" in line
    assert "arms.control" in line
    assert not (tmp_path / "d").exists()      # nothing was written


def test_traffic_split_not_100(tmp_path, capsys):
    path = _experiment(tmp_path, lambda d: d["arms"]["treatment"].update(share=60))
    assert main(["campaign", "--experiment", str(path), "--data-dir", str(tmp_path / "d")]) == 2
    line = _error(capsys)
    assert "traffic shares must sum to 100, got 110" in line and "treatment=60" in line


def test_unknown_channel(tmp_path, capsys):
    path = _experiment(tmp_path, lambda d: d["arms"]["treatment"]["channels"].update(deepwalk=10))
    assert main(["campaign", "--experiment", str(path), "--data-dir", str(tmp_path / "d")]) == 2
    assert "unknown channel 'deepwalk'" in _error(capsys)


def test_unknown_scenario_key(tmp_path, capsys):
    path = tmp_path / "world.yaml"
    path.write_text("name: x\nusers: {n: 10, mood: 3}\n")
    assert main(["campaign", "--scenario", str(path), "--data-dir", str(tmp_path / "d")]) == 2
    assert "users: unknown setting 'mood'" in _error(capsys)


def test_missing_campaign_and_missing_day(tmp_path, capsys):
    assert main(["run-day", "--day", "1", "--data-dir", str(tmp_path)]) == 2
    assert "holds no campaign" in _error(capsys)


def test_lake_of_another_schema_version_is_one_clear_line(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components.contracts import SCHEMAS

    path = tmp_path / "lake" / "world_daily" / "day=00000.parquet"
    path.parent.mkdir(parents=True)
    old = SCHEMAS["world_daily"].empty_table().replace_schema_metadata({b"reclab.schema_version": b"1"})
    pq.write_table(old, path)
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert str(path) in line and "schema version 1" in line and "--data-dir" in line


def test_truncated_partition_is_one_clear_line_naming_the_rebuild(tmp_path, capsys):
    from components.lake import Lake
    from components.contracts import SCHEMAS

    lake = Lake(tmp_path / "lake")
    row = {"day": 3, "arm": "control", "requests": 1, "ctr_expected": 0.1, "ctr_oracle": 0.2, "ctr_random": 0.0}
    import pyarrow as pa

    path = lake.write("world_daily", 3, pa.Table.from_pylist([row], schema=SCHEMAS["world_daily"]))
    path.write_bytes(path.read_bytes()[:-20])
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert str(path) in line and "corrupt or truncated" in line
    assert f"reclab run-day --day 3 --data-dir {tmp_path}" in line


def test_report_of_a_directory_without_a_campaign_is_one_line(tmp_path, capsys):
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert f"{tmp_path} holds no reported day" in line
    assert f"reclab campaign --data-dir {tmp_path}" in line


def test_report_of_a_campaign_that_reported_no_day_yet_names_the_missing_tables(tmp_path, capsys):
    # Killed during the bootstrap day: requests logged, nothing reported yet.
    from components.lake import Lake

    lake = Lake(tmp_path / "lake")
    lake.write("latency_daily", 0, _rows("latency_daily", 0, 2))
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert "(ab_daily, world_daily not in" in line and "reclab campaign --data-dir" in line


def _rows(table: str, day: int, n: int):
    """`n` rows of `table` for `day`, every column filled with varied values of its type."""
    import pyarrow as pa

    from components.contracts import SCHEMAS

    cols = {}
    for f in SCHEMAS[table]:
        if f.name == "day":
            cols[f.name] = [day] * n
        elif f.name == "arm":
            cols[f.name] = ["control"] + [f"arm{i}" for i in range(1, n)]
        elif f.name == "stage":
            cols[f.name] = ["total"] * n
        elif pa.types.is_boolean(f.type):
            cols[f.name] = [i == 0 for i in range(n)]
        elif pa.types.is_integer(f.type):
            cols[f.name] = [i * 7919 % 1009 for i in range(n)]
        elif pa.types.is_floating(f.type):
            cols[f.name] = [(i * 104729 % 10007) / 10007 for i in range(n)]
        elif pa.types.is_list(f.type):
            cols[f.name] = [[] for _ in range(n)]
        else:
            cols[f.name] = [f"v{i % 97}" for i in range(n)]
    return pa.Table.from_pydict(cols, schema=SCHEMAS[table])


def test_zeroed_span_inside_a_partition_is_one_line_naming_it_and_the_rebuild(tmp_path, capsys):
    from components.lake import Lake

    lake = Lake(tmp_path / "lake")
    for table in ("ab_daily", "latency_daily"):
        lake.write(table, 1, _rows(table, 1, 1))
    path = lake.write("world_daily", 1, _rows("world_daily", 1, 20000))
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)      # the footer stays valid
    path.write_bytes(bytes(data))
    others = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet") if p != path}
    assert main(["report", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert str(path) in line and "corrupt or truncated" in line
    assert f"reclab run-day --day 1 --data-dir {tmp_path}" in line
    assert {p: p.read_bytes() for p in others} == others


def test_a_campaign_manifest_with_a_removed_setting_is_one_line_saying_why(tmp_path, capsys):
    import json

    from components.experiment import load_experiment
    from story.campaign import MANIFEST, create_campaign
    from sim.config import load_scenario

    create_campaign(tmp_path, "old", load_scenario("tiny"), load_experiment("default"), None)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["experiment"]["seed"] = 11          # what campaigns of an older reclab recorded
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert main(["run-day", "--day", "1", "--data-dir", str(tmp_path)]) == 2
    line = _error(capsys)
    assert "campaign.experiment: setting 'seed' was removed (it seeded nothing" in line


@pytest.mark.parametrize("table, day, ok", [("world_daily", 1, False), ("items", 1, False),
                                            ("impressions", 0, False), ("ab_daily", 1, False),
                                            ("ab_daily", 2, True), ("requests", 1, True)])
def test_a_lost_partition_the_summary_reads_is_named_not_silently_skipped(tmp_path, capsys, table, day, ok):
    from components.lake import Lake

    lake = Lake(tmp_path / "lake")
    for d in range(3):
        for t in ("ab_daily", "world_daily", "latency_daily", "impressions", "items", "requests"):
            lake.write(t, d, _rows(t, d, 3))
    lake.path(table, day).unlink()
    code = main(["report", "--data-dir", str(tmp_path)])
    if ok:     # a day not reported yet, or a table the summary does not read
        out = capsys.readouterr().out
        assert code == 0 and "CTR and latency" in out
        return
    assert code == 2
    line = _error(capsys)
    assert str(lake.path(table, day)) in line and f"reclab run-day --day {day} --data-dir {tmp_path}" in line


def test_resuming_a_campaign_whose_kept_day_lost_a_partition_names_it_before_running(tmp_path, capsys):
    from components.lake import Lake
    from components.experiment import load_experiment
    from story.campaign import REPORT_TABLES, create_campaign
    from sim.config import load_scenario

    c = create_campaign(tmp_path, "itemcf-recall@tiny-seed3", load_scenario("tiny"), load_experiment("default"), None)
    lake = Lake(tmp_path / "lake")
    for day in range(2):
        for t in (*REPORT_TABLES, "requests"):       # both days complete: kept by the resume
            lake.write(t, day, _rows(t, day, 2))
        c.models_dir(day).mkdir(parents=True)
    lake.path("requests", 0).unlink()
    argv = ["campaign", "--scenario", "tiny", "--experiment", "default", "--days", "1", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    line = _error(capsys)
    assert str(lake.path("requests", 0)) in line and f"reclab run-day --day 0 --data-dir {tmp_path}" in line


def test_the_dashboards_first_page_shows_a_damaged_partition_as_one_line(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from components.lake import Lake

    lake = Lake(tmp_path / "lake")
    for t in ("ab_daily", "latency_daily"):
        lake.write(t, 1, _rows(t, 1, 1))
    path = lake.write("world_daily", 1, _rows("world_daily", 1, 20000))
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    monkeypatch.setenv("RECLAB_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py"),
                           default_timeout=120).run()
    assert not at.exception
    [error] = [e.value for e in at.error]
    assert str(path) in error and "corrupt or truncated" in error and "\n" not in error
    assert f"reclab run-day --day 1 --data-dir {tmp_path}" in error


def test_a_summary_of_chosen_days_does_not_refuse_a_gap_elsewhere(tmp_path):
    # A resumed campaign summarises its kept day 0 while day 1 (lost) is yet to be re-run.
    from components.lake import Lake
    from components.reports import summary_rows

    lake = Lake(tmp_path / "lake")
    for d in range(3):
        for t in ("ab_daily", "world_daily", "latency_daily", "impressions", "items"):
            lake.write(t, d, _rows(t, d, 3))
    lake.path("ab_daily", 1).unlink()
    assert {r["day"] for r in summary_rows(lake, [0])} == {0}
