"""Registered models on the real MLflow server, made the way the pipeline's gate leaves them."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from daemon.model import tags
from tests.support import services


def three_versions(mlflow_server: services.MlflowServer, model: str) -> MlflowClient:
    """v1 and v3 promoted by the gate, v2 rejected; v3 is champion."""
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment(f"{model}-runs")
    client.create_registered_model(model)
    for _ in range(3):
        run_id = client.create_run(experiment).info.run_id
        version = client.create_model_version(model, source=f"runs:/{run_id}/model", run_id=run_id)
        client.set_model_version_tag(model, version.version, tags.GATE_DECISION, "promoted")
    client.set_model_version_tag(model, "2", tags.GATE_DECISION, "rejected")
    client.set_registered_model_alias(model, tags.CHAMPION_ALIAS, "3")
    return client
