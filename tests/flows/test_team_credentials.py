"""The team stack's credentials: the environment wins, the file keeps the rest private and stable."""
from __future__ import annotations

import stat

from flows.team import SECRETS, credentials, credentials_file


def test_generated_once_owner_only_and_the_environment_wins(tmp_path, monkeypatch):
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("RECLAB_CREDENTIALS", raising=False)
    first = credentials(tmp_path)
    path = credentials_file(tmp_path)
    assert set(first) == set(SECRETS) and all(first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials(tmp_path) == first                 # read back, not generated again
    assert first["PREFECT_SERVER_API_AUTH_STRING"].count(":") == 1
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "from-env")
    assert credentials(tmp_path)["MLFLOW_TRACKING_PASSWORD"] == "from-env"
    assert "from-env" not in path.read_text()             # the environment's secret is not written down
    path.unlink()
    again = credentials(tmp_path)
    assert again["MLFLOW_TRACKING_PASSWORD"] == "from-env"
    assert "MLFLOW_TRACKING_PASSWORD" not in path.read_text() and "POSTGRES_PASSWORD" in path.read_text()


def test_the_file_named_by_the_environment_is_used(tmp_path, monkeypatch):
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    own = tmp_path / "mine.env"
    own.write_text("".join(f"{k}=v-{k}\n" for k in SECRETS))
    monkeypatch.setenv("RECLAB_CREDENTIALS", str(own))
    assert credentials(tmp_path / "state") == {k: f"v-{k}" for k in SECRETS}
