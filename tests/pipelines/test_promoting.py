"""The promotion step's compare-and-set, on a real MLflow server with a real (tiny) training: a champion that
moves while the candidate is evaluated makes the promotion `refused`, and the alias stays where it was moved."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
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
    assert outcome.run_id == trained["run_id"]  # the dashboard links the run in the MLflow UI
    assert f"champion moved from vNone to v{other} during evaluation" in outcome.reason
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == str(other)  # not overwritten
    refused = client.get_model_version(model, outcome.version)
    assert refused.tags[tags.GATE_DECISION] == "refused"


# --- like with like: the split the gate decides on, the classes it compares, a portable champion -----------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A detector worth comparing (40 epochs on 48 synthetic images: mAP50-95 about 0.4) and its dataset."""
    root = tmp_path_factory.mktemp("shapes")
    synthetic.generate(root / "raw", count=64, seed=1)
    manifest = materializing.manifest_for_folder(root / "raw", dataset="shapes")
    materializing.materialize(manifest, out_dir=root / "dataset", val_fraction=0.25)
    weights = training.train(
        data_yaml=root / "dataset" / "data.yaml",
        base="yolov8n.yaml",
        epochs=40,
        imgsz=128,
        batch=16,
        hyperparameters={},
        device="cpu",
        out_dir=root / "train",
    )
    return {"dataset": root / "dataset", "weights": weights, "root": root}


def _copy_dataset(source: Path, target: Path, names: list[str], relabel: dict[str, str] | None = None) -> Path:
    """The dataset with the class list ``names``: every label keeps its class *name* (so ids change when the
    order does); ``relabel`` renames classes on the way; labels of names not in the list are dropped."""
    data = yaml.safe_load((source / "data.yaml").read_text())
    old = [data["names"][i] for i in sorted(data["names"])]
    renamed = {name: (relabel or {}).get(name, name) for name in old}
    for image in source.glob("images/*/*"):
        split = image.parent.name
        (target / "images" / split).mkdir(parents=True, exist_ok=True)
        (target / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target / "images" / split / image.name)
        lines = []
        for line in (source / "labels" / split / f"{image.stem}.txt").read_text().splitlines():
            cls, *rest = line.split()
            name = renamed[old[int(cls)]]
            if name in names:
                lines.append(" ".join([str(names.index(name)), *rest]))
        (target / "labels" / split / f"{image.stem}.txt").write_text("".join(f"{x}\n" for x in lines))
    written = {"path": str(target), "train": "images/train", "val": "images/val", "names": dict(enumerate(names))}
    (target / "data.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    return target / "data.yaml"


def _logged(model: str, weights: Path, example: Path) -> tuple[str, str]:
    """A run of ``model``'s experiment holding ``weights`` as the pyfunc model: (run id, model URI)."""
    mlflow.set_experiment(model)
    with mlflow.start_run() as run:
        info = training.log_detector(weights, example=example.read_bytes())
    return run.info.run_id, info.model_uri


def _champion(model: str, weights: Path, example: Path) -> str:
    _, uri = _logged(model, weights, example)
    version = str(mlflow.register_model(uri, model).version)
    MlflowClient().set_registered_model_alias(model, tags.CHAMPION_ALIAS, version)
    return version


def _gate(model: str, weights: Path, data_yaml: Path, work: Path, example: Path, **policy: Any) -> Any:
    run_id, uri = _logged(model, weights, example)
    return promoting.evaluate_and_promote(
        registry_=registry.Mlflow(tracking_uri=mlflow.get_tracking_uri()),
        registered_name=model,
        model_uri=uri,
        run_id=run_id,
        candidate_weights=weights,
        data_yaml=data_yaml,
        imgsz=128,
        device="cpu",
        policy=rules.PromotionSpec(**policy),
        run_key=f"{model}-{work.name}",
        workdir=work,
    )


def test_the_champion_is_scored_by_class_name_when_the_dataset_reorders_its_ids(
    mlflow_server: services.MlflowServer, shapes: dict[str, Path], tmp_path: Path
) -> None:
    """Before: a champion was scored on the dataset's ids as they are now; with the class list reordered, its
    red boxes were counted against the blue labels (and the per-class guard matched ids, not names)."""
    mlflow.set_tracking_uri(mlflow_server.url)
    example = next((shapes["dataset"] / "images" / "val").iterdir())
    direct = training.evaluate(
        weights=shapes["weights"], data_yaml=shapes["dataset"] / "data.yaml", imgsz=128, device="cpu", out_dir=tmp_path
    )
    assert direct.map50_95 > 0.2  # a model worth comparing
    _champion("reordered", shapes["weights"], example)
    reordered = _copy_dataset(shapes["dataset"], tmp_path / "reordered", ["blue-box", "red-box", "green-box"])
    outcome = _gate("reordered", shapes["weights"], reordered, tmp_path / "work", example, max_class_drop=0.01)
    # The same model on the same images: the same numbers, class by class, whatever the ids are now.
    assert outcome.champion is not None and outcome.candidate is not None
    assert outcome.champion.map50_95 == pytest.approx(direct.map50_95, abs=1e-6)
    assert outcome.candidate.map50_95 == pytest.approx(direct.map50_95, abs=1e-6)
    assert dict(outcome.champion.per_class) == pytest.approx(dict(direct.per_class), abs=1e-6)
    assert outcome.decision is outcomes.GateDecision.REJECTED
    assert "improvement +0.0000 is not more than min_improvement" in outcome.reason
    assert "[decided on the val split (" in outcome.reason and "shared" not in outcome.reason


def test_a_changed_class_list_is_refused_or_compared_on_the_shared_classes_as_the_rule_says(
    mlflow_server: services.MlflowServer, shapes: dict[str, Path], tmp_path: Path
) -> None:
    """Before: a champion trained on fewer classes was scored on a subset (Ultralytics skips labels of ids it
    cannot predict) while the candidate averaged every class: two mAPs over different class sets."""
    mlflow.set_tracking_uri(mlflow_server.url)
    example = next((shapes["dataset"] / "images" / "val").iterdir())
    names = ["red-box", "green-box", "blue-box", "yellow-box"]
    grown = _copy_dataset(shapes["dataset"], tmp_path / "grown", names, relabel={"blue-box": "yellow-box"})
    # Every other image's yellow boxes are blue again: a fourth class beside the three, labelled in every split.
    for label in sorted((tmp_path / "grown" / "labels").rglob("*.txt"))[::2]:
        lines = [("2" + line[1:] if line.startswith("3 ") else line) for line in label.read_text().splitlines()]
        label.write_text("".join(f"{line}\n" for line in lines))
    candidate = training.train(
        data_yaml=grown, base="yolov8n.yaml", epochs=1, imgsz=64, batch=16, hyperparameters={}, device="cpu",
        out_dir=tmp_path / "train",
    )  # fmt: skip
    client = MlflowClient()
    for model, policy in (("grown-refuse", "refuse"), ("grown-shared", "shared")):
        champion = _champion(model, shapes["weights"], example)
        outcome = _gate(model, candidate, grown, tmp_path / model, example, class_change=policy)
        compared = json.loads(client.get_model_version(model, outcome.version).tags[tags.GATE_CLASSES])
        if policy == "refuse":
            assert outcome.decision is outcomes.GateDecision.REJECTED and outcome.champion is None
            assert f"the class names changed since champion v{champion} (added yellow-box)" in outcome.reason
            assert "promotion.class_change is refuse" in outcome.reason
            assert compared == names
        else:
            assert outcome.champion is not None and outcome.candidate is not None
            assert set(outcome.champion.per_class) == {"red-box", "green-box", "blue-box"}
            assert set(outcome.candidate.per_class) <= {"red-box", "green-box", "blue-box"}  # yellow left out
            assert f"the 3 classes shared with champion v{champion}" in outcome.reason
            assert compared == ["red-box", "green-box", "blue-box"]


def test_the_gate_decides_on_the_test_split_when_there_is_one(
    mlflow_server: services.MlflowServer, shapes: dict[str, Path], tmp_path: Path
) -> None:
    """Before: the validation split chose the best epoch and the best trial and also passed the gate."""
    mlflow.set_tracking_uri(mlflow_server.url)
    example = next((shapes["dataset"] / "images" / "val").iterdir())
    data_yaml = _copy_dataset(shapes["dataset"], tmp_path / "split", ["red-box", "green-box", "blue-box"])
    root = tmp_path / "split"
    for kind, suffix in (("images", ".jpg"), ("labels", ".txt")):
        (root / kind / "test").mkdir()
        for path in sorted((root / "images" / "val").iterdir())[:6]:
            (root / kind / "val" / f"{path.stem}{suffix}").rename(root / kind / "test" / f"{path.stem}{suffix}")
    data = yaml.safe_load(data_yaml.read_text()) | {"test": "images/test"}
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = _gate("split", shapes["weights"], data_yaml, tmp_path / "work", example)
    assert outcome.candidate is not None
    assert (outcome.candidate.split, outcome.candidate.images) == ("test", 6)
    assert outcome.reason.endswith("[decided on the test split (6 images)]")
    version = MlflowClient().get_model_version("split", outcome.version)
    assert version.tags[tags.GATE_SPLIT] == "test"


PORTABLE_CHECK = """
import json, sys
sys.modules["pipelines"] = None  # this project cannot be imported here
sys.modules["daemon"] = None
import io
import mlflow
import numpy as np
from PIL import Image

model = mlflow.pyfunc.load_model(sys.argv[1])
encoded = open(sys.argv[2], "rb").read()
pixels = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
found = model.predict({"image": [encoded, pixels]}, params={"conf": 0.05, "iou": 0.5, "device": "cpu"})
inputs = model.metadata.signature.inputs.to_dict()
params = {p.name: p.default for p in model.metadata.signature.params.params}
print(json.dumps({"rows": found.to_dict("records"), "inputs": inputs, "params": params,
                  "example": model.input_example is not None}))
"""


def test_the_champion_loads_and_predicts_where_this_project_is_not_installed(
    mlflow_server: services.MlflowServer, shapes: dict[str, Path], tmp_path: Path
) -> None:
    """Before: loading the pyfunc imported this project (``ModuleNotFoundError: No module named 'pipelines'``),
    it had no signature and no input example, and took only file paths on the serving machine."""
    mlflow.set_tracking_uri(mlflow_server.url)
    image = next((shapes["dataset"] / "images" / "val").iterdir())
    _champion("portable", shapes["weights"], image)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MLFLOW_TRACKING_URI": mlflow_server.url}
    done = subprocess.run(
        [sys.executable, "-I", "-c", PORTABLE_CHECK, f"models:/portable@{tags.CHAMPION_ALIAS}", str(image)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["inputs"] == [{"type": "binary", "name": "image", "required": True}]
    assert found["params"] == {"conf": 0.25, "iou": 0.7, "device": "auto", "max_det": 300}
    assert found["example"]
    rows = found["rows"]
    by_image = [[r for r in rows if r["image"] == i] for i in (0, 1)]
    assert by_image[0] and len(by_image[0]) == len(by_image[1])  # bytes and pixels: the same detections
    for encoded, pixels in zip(by_image[0], by_image[1], strict=True):
        assert encoded["class_name"] == pixels["class_name"]
        assert encoded["confidence"] == pytest.approx(pixels["confidence"], abs=1e-4)
    label = shapes["dataset"] / "labels" / "val" / f"{image.stem}.txt"
    truth = {int(line.split()[0]) for line in label.read_text().splitlines()}
    best = max(by_image[0], key=lambda r: r["confidence"])
    assert best["class_id"] in truth and best["class_name"] == synthetic.CLASSES[best["class_id"]]
    assert 0 <= best["x1"] < best["x2"] <= 128 and 0 <= best["y1"] < best["y2"] <= 128
