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
    path.write_text("name: x\nusers: {n: 10, activity: 3}\n")
    assert main(["campaign", "--scenario", str(path), "--data-dir", str(tmp_path / "d")]) == 2
    assert "users: unknown setting 'activity'" in _error(capsys)


def test_missing_campaign_and_missing_day(tmp_path, capsys):
    assert main(["run-day", "--day", "1", "--data-dir", str(tmp_path)]) == 2
    assert "holds no campaign" in _error(capsys)
