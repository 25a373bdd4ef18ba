"""The promotion step's compare-and-set, on a real MLflow server with a real (tiny) training: a champion that
moves while the candidate is evaluated makes the promotion `refused`, and the alias stays where it was moved."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from daemon.model import outcomes, rules, tags
from daemon.registry import mlflow as registry
from pipelines import synthetic
from pipelines.steps import materializing, promoting, training
from tests.support import services

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]


class MovedDuringEvaluation(registry.Mlflow):
    """The registry as a concurrent promotion sees it: right after the step read "no champion", another run
    points the alias at ``other`` (a real move on the real server)."""

    def __init__(self, *, tracking_uri: str, other: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.other = other
        self.reads = 0

    def champion(self, model: str) -> registry.Champion | None:
        found = super().champion(model)
        self.reads += 1
        if self.reads == 1:
            MlflowClient(tracking_uri=self.tracking_uri).set_registered_model_alias(
                model, tags.CHAMPION_ALIAS, self.other
            )
        return found


def test_a_champion_moved_during_evaluation_makes_the_promotion_refused(
    mlflow_server: services.MlflowServer, tmp_path: Path
) -> None:
    synthetic.generate(tmp_path / "shapes", count=8, seed=3, split="train")
    synthetic.generate(tmp_path / "shapes", count=4, seed=4, split="val")
    manifest = materializing.manifest_for_folder(tmp_path / "shapes", dataset="shapes", classes=list(synthetic.CLASSES))
    materializing.materialize(manifest, out_dir=tmp_path / "dataset", val_fraction=0.3)
    model = f"cas-{tmp_path.name[-8:]}".replace("_", "-")
    trained = training.train_tracked(
        tracking_uri=mlflow_server.url,
        experiment=model,
        run_key="cas-r1",
        run_tags={tags.RUN_KEY: "cas-r1"},
        data_yaml=tmp_path / "dataset" / "data.yaml",
        base="yolov8n.yaml",
        epochs=1,
        imgsz=64,
        batch=8,
        hyperparameters={},
        device="cpu",
        out_dir=tmp_path / "train",
    )
    client = MlflowClient(tracking_uri=mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    other = mlflow.register_model(trained["model_uri"], model).version  # another run's version
    racing = MovedDuringEvaluation(tracking_uri=mlflow_server.url, other=str(other))
    outcome = promoting.evaluate_and_promote(
        registry_=racing,
        registered_name=model,
        model_uri=trained["model_uri"],
        run_id=trained["run_id"],
        candidate_weights=Path(trained["weights"]),
        data_yaml=tmp_path / "dataset" / "data.yaml",
        imgsz=64,
        device="cpu",
        policy=rules.PromotionSpec(first_model_min=0.0),
        run_key="cas-r1",
        workdir=tmp_path / "work",
    )
    assert outcome.decision is outcomes.GateDecision.REFUSED
    assert f"champion moved from vNone to v{other} during evaluation" in outcome.reason
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == str(other)  # not overwritten
    refused = client.get_model_version(model, outcome.version)
    assert refused.tags[tags.GATE_DECISION] == "refused"
