"""`retrain rollback` against the real MLflow server: the alias moves back, recorded with who and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import constants
from daemon.journal import sqlite
from tests import services
from tests.test_cli import run

pytestmark = pytest.mark.services


def test_rollback_moves_the_champion_back_and_records_it(mlflow_server: services.MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    model = "rollback-detector"
    experiment = client.create_experiment("rollback")
    client.create_registered_model(model)
    for _ in range(3):
        run_id = client.create_run(experiment).info.run_id
        version = client.create_model_version(model, source=f"runs:/{run_id}/model", run_id=run_id)
        client.set_model_version_tag(model, version.version, constants.TAG_GATE_DECISION, "promoted")
    client.set_model_version_tag(model, "2", constants.TAG_GATE_DECISION, "rejected")
    client.set_registered_model_alias(model, constants.CHAMPION_ALIAS, "3")
    env = {"RETRAIN_MLFLOW__TRACKING_URI": mlflow_server.url, "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db")}

    result = run("rollback", model, "--reason", "v3 misses pallets at night", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{model}: champion moved from v3 to v1" in result.stdout  # v2 was never promoted
    assert client.get_model_version_by_alias(model, constants.CHAMPION_ALIAS).version == "1"
    assert "v3 misses pallets at night" in client.get_model_version(model, "1").tags["retrain.rollback"]
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    [record] = journal.promotions(model)
    journal.close()
    assert (record.kind, record.version, record.previous_version) == ("rollback", "1", "3")
    assert record.reason == "v3 misses pallets at night"

    assert run("rollback", model, "--to", "3", env=env).returncode == 0
    assert client.get_model_version_by_alias(model, constants.CHAMPION_ALIAS).version == "3"

    missing = run("rollback", model, "--to", "99", env=env)
    assert missing.returncode == 1
    assert "moving the champion of rollback-detector to v99" in missing.stderr
    assert client.get_model_version_by_alias(model, constants.CHAMPION_ALIAS).version == "3"
