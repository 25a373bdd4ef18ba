"""`retrain rollback` against the real MLflow server: the alias moves back, recorded with who and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.journal import sqlite
from daemon.model import tags
from tests.support import apps, services
from tests.support.processes import run_cli as run
from tests.support.registry import three_versions

pytestmark = pytest.mark.services


def test_rollback_moves_the_champion_back_and_records_it(mlflow_server: services.MlflowServer, tmp_path: Path) -> None:
    model = "rollback-detector"
    client = three_versions(mlflow_server, model)
    env = {"RETRAIN_MLFLOW__TRACKING_URI": mlflow_server.url, "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db")}

    result = run("rollback", model, "--reason", "v3 misses pallets at night", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{model}: champion moved from v3 to v1" in result.stdout  # v2 was never promoted
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "1"
    assert "v3 misses pallets at night" in client.get_model_version(model, "1").tags["retrain.rollback"]
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    [record] = journal.promotions(model)
    journal.close()
    assert (record.kind, record.version, record.previous_version) == ("rollback", "1", "3")
    assert record.reason == "v3 misses pallets at night"

    assert run("rollback", model, "--to", "3", env=env).returncode == 0
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "3"

    missing = run("rollback", model, "--to", "99", env=env)
    assert missing.returncode == 1
    assert "moving the champion of rollback-detector to v99" in missing.stderr
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "3"


def test_the_api_rolls_back_with_the_token(mlflow_server: services.MlflowServer, tmp_path: Path) -> None:
    model = "api-rollback-detector"
    client = three_versions(mlflow_server, model)
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    try:
        app = apps.app_for(journal, tracking_uri=mlflow_server.url, api_token=apps.API_TOKEN)
        path = f"/api/v1/models/{model}/rollback"
        body = {"reason": "v3 misses pallets at night", "actor": "ops"}
        assert apps.request(app, "POST", path, json=body).status_code == 401
        assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "3"

        done = apps.request(app, "POST", path, json=body, headers={"Authorization": f"Bearer {apps.API_TOKEN}"})
        assert done.status_code == 200, done.text
        assert done.json() == {"model": model, "previous": "3", "champion": "1", "actor": "api:ops"}
        assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "1"
        [record] = journal.promotions(model)
        assert (record.kind, record.version, record.actor) == ("rollback", "1", "api:ops")

        missing = apps.request(
            app, "POST", path, json={"to": "99"}, headers={"Authorization": f"Bearer {apps.API_TOKEN}"}
        )
        assert missing.status_code == 409
        assert "v99" in missing.json()["detail"]
    finally:
        journal.close()
