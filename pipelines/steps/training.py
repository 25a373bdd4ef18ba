"""train / evaluate: Ultralytics YOLO, offline, tracked in MLflow.

Offline means: ``YOLO_OFFLINE=1``, a private ``YOLO_CONFIG_DIR`` with a TTF copied in as ``Arial.ttf``
(Ultralytics otherwise tries to download it on every dataset check), and base weights that are a local
file, a ``*.yaml`` model config (random init) or an MLflow model. Nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import constants


def prepare_offline(config_dir: Path | None = None) -> Path:
    """Point Ultralytics at a config dir with a font, and switch off every download. The trainer image sets
    ``YOLO_CONFIG_DIR`` to a folder with the font baked in; elsewhere a temporary folder gets a copy."""
    configured = os.environ.get("YOLO_CONFIG_DIR")
    directory = config_dir or (Path(configured) if configured else Path(tempfile.gettempdir()) / "retrain-yolo-config")
    (directory / "Ultralytics").mkdir(parents=True, exist_ok=True)
    font = directory / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(dejavu, font)
        shutil.copyfile(dejavu, directory / "Arial.ttf")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    os.environ.setdefault("MLFLOW_KEEP_RUN_ACTIVE", "true")
    return directory


def device_for(gpus: int) -> str:
    import torch

    if gpus > 0 and torch.cuda.is_available():
        return ",".join(str(i) for i in range(min(gpus, torch.cuda.device_count())))
    return "cpu"


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    map50_95: float
    map50: float
    per_class: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"map50_95": self.map50_95, "map50": self.map50, "per_class": self.per_class}


def resolve_base(base: str, *, workdir: Path) -> str:
    """A local path for the base model: a file, a model config, or the weights of an MLflow model."""
    if base.startswith("models:/"):
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=base, dst_path=str(workdir / "base")))
        weights = sorted(local.rglob("*.pt"))
        if not weights:
            raise FileNotFoundError(f"{base} holds no .pt weights")
        return str(weights[0])
    if base.endswith(".pt") and not Path(base).exists():
        raise FileNotFoundError(
            f"base weights {base} not found: provide the file (nothing is downloaded), use a *.yaml config, "
            "or models:/NAME@champion"
        )
    return base


def evaluate(*, weights: Path, data_yaml: Path, imgsz: int, device: str) -> Evaluation:
    """mAP50-95, mAP50 and per-class AP50-95 on the validation split."""
    prepare_offline()
    from ultralytics import YOLO

    results = YOLO(str(weights)).val(
        data=str(data_yaml), imgsz=imgsz, device=device, plots=False, verbose=False, workers=0, batch=16
    )
    per_class = {str(int(c)): float(results.box.maps[int(c)]) for c in results.box.ap_class_index}
    return Evaluation(map50_95=float(results.box.map), map50=float(results.box.map50), per_class=per_class)


def _metric_name(name: str) -> str:
    """MLflow rejects parentheses in metric names: ``metrics/mAP50-95(B)`` -> ``metrics/mAP50-95B``."""
    return name.replace("(", "").replace(")", "")


def train_tracked(
    *,
    tracking_uri: str,
    experiment: str,
    run_key: str,
    tags: dict[str, str],
    data_yaml: Path,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    hyperparameters: dict[str, float],
    device: str,
    out_dir: Path,
) -> dict[str, str]:
    """Train inside an MLflow run named ``run_key``: params, per-epoch metrics, weights and a pyfunc model.

    Returns ``run_id``, ``model_uri`` and ``weights`` (the local best weights).
    """
    import mlflow

    from pipelines import pyfunc

    prepare_offline()
    from ultralytics import settings as yolo_settings

    yolo_settings.update({"mlflow": False})  # our own callback logs, once, with MLflow-safe names
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_key, tags=tags) as run:
        mlflow.log_params(
            {"base": base, "epochs": epochs, "imgsz": imgsz, "batch": batch, "device": device, **hyperparameters}
        )

        def log_epoch(trainer: Any) -> None:
            values = {_metric_name(k): float(v) for k, v in trainer.metrics.items()}
            values |= {
                _metric_name(k): float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()
            }
            mlflow.log_metrics(values, step=int(trainer.epoch) + 1)
            # Ultralytics calls this once more after the last epoch, for the best weights' final validation.
            epoch = int(trainer.epoch) + 1
            progress: dict[str, Any] = {"epoch": epoch, "epochs": epochs} if epoch <= epochs else {"final": "best.pt"}
            progress["map50_95"] = round(float(trainer.metrics.get("metrics/mAP50-95(B)", 0.0)), 4)
            progress["map50"] = round(float(trainer.metrics.get("metrics/mAP50(B)", 0.0)), 4)
            print(constants.PROGRESS_MARK + json.dumps(progress), flush=True)

        weights = train(
            on_epoch=log_epoch,
            data_yaml=data_yaml,
            base=base,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            hyperparameters=hyperparameters,
            device=device,
            out_dir=out_dir,
        )
        mlflow.log_artifact(str(weights), artifact_path="weights")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc.YoloDetector(),
            artifacts={"weights": str(weights)},
            pip_requirements=["ultralytics>=8.3,<9", "retrain-daemon[train]"],
        )
        return {"run_id": run.info.run_id, "model_uri": info.model_uri, "weights": str(weights)}


def train(
    *,
    data_yaml: Path,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    hyperparameters: dict[str, float],
    device: str,
    out_dir: Path,
    on_epoch: Any = None,
) -> Path:
    """Train and return the best weights; ``on_epoch(trainer)`` is called after each epoch's validation."""
    prepare_offline()
    from ultralytics import YOLO

    model = YOLO(resolve_base(base, workdir=out_dir))
    if on_epoch is not None:
        model.add_callback("on_fit_epoch_end", on_epoch)
    model.train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=0,
        plots=False,
        project=str(out_dir),
        name="train",
        exist_ok=True,
        seed=0,
        deterministic=True,
        verbose=False,
        amp=device != "cpu",
        **hyperparameters,
    )
    best = Path(model.trainer.best)
    return best if best.exists() else Path(model.trainer.last)
