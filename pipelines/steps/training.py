"""train / evaluate: Ultralytics YOLO, offline (:mod:`pipelines.steps.offline`), tracked in MLflow.

Training is idempotent by run key, because KFP retries a failed task: the MLflow run is found by its
``retrain.run_key`` tag; a run that already finished with its model logged is returned as it is (the retry
does not train twice), one that died mid-way is resumed (the same MLflow run, trained again).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import constants
from daemon.model import outcomes, tags
from daemon.registry import mlflow as registry
from pipelines.steps import loaders
from pipelines.steps.offline import prepare_offline

#: Run tag holding the logged model's URI once training finished (what a retry reuses).
MODEL_URI_TAG = "retrain.model_uri"
#: What the training's folder holds that is logged under ``plots/``: Ultralytics' curves, confusion
#: matrices and results plot (with ``plots``), and its per-epoch ``results.csv`` (always).
PLOT_SUFFIXES = (".png", ".csv")


@dataclass(frozen=True, kw_only=True)
class TrainerOptions:
    """How Ultralytics trains and evaluates, from the daemon's ``pipeline`` settings
    (``PipelineSettings.trainer_options``): DataLoader workers, plots, determinism."""

    workers: int = 0
    plots: bool = False
    deterministic: bool = True

    @classmethod
    def from_json(cls, text: str) -> TrainerOptions:
        data = json.loads(text) if text else {}
        return cls(
            workers=int(data.get("workers", 0)),
            plots=bool(data.get("plots", False)),
            deterministic=bool(data.get("deterministic", True)),
        )


#: The options of a step called without any (tests, the benchmark): no workers, no plots, deterministic.
DEFAULT_OPTIONS = TrainerOptions()


def device_for(gpus: int) -> str:
    import torch

    if gpus > 0 and torch.cuda.is_available():
        return ",".join(str(i) for i in range(min(gpus, torch.cuda.device_count())))
    return "cpu"


def _finite(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.nan


def evaluate(
    *,
    weights: Path,
    data_yaml: Path,
    imgsz: int,
    device: str,
    out_dir: Path,
    batch: int = 16,
    options: TrainerOptions = DEFAULT_OPTIONS,
    split: str = "val",
    images: int | None = None,
) -> outcomes.Evaluation:
    """mAP50-95, mAP50 and per-class AP50-95 (by class name) on one split (``val`` unless told).

    Ultralytics writes its validation files under ``out_dir`` (by default it would pick ``runs/`` of the
    working folder, which a task pod's image may not let it write)."""
    prepare_offline()
    from ultralytics import YOLO

    results = YOLO(str(weights)).val(
        data=str(data_yaml),
        split=split,
        imgsz=imgsz,
        device=device,
        plots=False,
        verbose=False,
        workers=loaders.workers_for_shm(options.workers, batch=batch, imgsz=imgsz),
        batch=batch,
        project=str(out_dir),
        name="val",
        exist_ok=True,
    )
    names = results.names
    per_class = {str(names.get(int(c), int(c))): _finite(results.box.maps[int(c)]) for c in results.box.ap_class_index}
    return outcomes.Evaluation(
        map50_95=_finite(results.box.map),
        map50=_finite(results.box.map50),
        per_class=per_class,
        split=split,
        images=images,
    )


def class_names(weights: Path) -> list[str]:
    """The class names of a weights file, by id (what its predicted ids mean)."""
    prepare_offline()
    from ultralytics import YOLO

    names = YOLO(str(weights)).names
    return [str(names[i]) for i in sorted(names)]


def _metric_name(name: str) -> str:
    """MLflow rejects parentheses in metric names: ``metrics/mAP50-95(B)`` -> ``metrics/mAP50-95B``."""
    return name.replace("(", "").replace(")", "")


def find_run(tracking_uri: str, experiment_id: str, tagged: dict[str, str]) -> Any:
    """The latest MLflow run in the experiment carrying every given tag value (None: none does)."""
    client = registry.Mlflow(tracking_uri=tracking_uri)
    clauses = " and ".join(f"tags.`{name}` = {registry.quoted(value, what=name)}" for name, value in tagged.items())
    found = client.call(
        f"finding the MLflow run tagged {tagged}",
        lambda: client.client.search_runs(
            [experiment_id], filter_string=clauses, order_by=["attributes.start_time DESC"], max_results=1
        ),
    )
    return found[0] if found else None


def run_of(tracking_uri: str, experiment_id: str, run_key: str) -> Any:
    """The MLflow run of ``run_key`` in the experiment, if an attempt (maybe an interrupted one) created it."""
    return find_run(tracking_uri, experiment_id, {tags.RUN_KEY: run_key})


def epoch_logger(epochs: int, *, then: Any = None, trial: int | None = None) -> Any:
    """An Ultralytics ``on_fit_epoch_end`` callback: the epoch's metrics and losses into the active MLflow run
    (MLflow-safe names), a progress line for the daemon (naming the tuning ``trial`` when it is one), and
    ``then(trainer, epoch, map50_95)`` if given."""
    import mlflow

    ended = False  # the training loop ended (its last epoch, or stopped early): the next call is the final one

    def log_epoch(trainer: Any) -> None:
        nonlocal ended
        values = {_metric_name(k): float(v) for k, v in trainer.metrics.items()}
        values |= {
            _metric_name(k): float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()
        }
        epoch = int(trainer.epoch) + 1
        # Ultralytics calls this once more after the loop, for the best weights' final validation.
        final = ended or epoch > epochs
        mlflow.log_metrics(values, step=epoch)
        progress: dict[str, Any] = {"final": "best.pt"} if final else {"epoch": epoch, "epochs": epochs}
        if trial is not None:
            progress["trial"] = trial
        progress["map50_95"] = round(float(trainer.metrics.get("metrics/mAP50-95(B)", 0.0)), 4)
        progress["map50"] = round(float(trainer.metrics.get("metrics/mAP50(B)", 0.0)), 4)
        print(constants.PROGRESS_MARK + json.dumps(progress), flush=True)
        if then is not None and not final:
            then(trainer, epoch, float(trainer.metrics.get("metrics/mAP50-95(B)", 0.0)))
        ended = ended or bool(getattr(trainer, "stop", False))

    return log_epoch


def train_tracked(
    *,
    tracking_uri: str,
    experiment: str,
    run_key: str,
    run_tags: dict[str, str],
    data_yaml: Path,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    hyperparameters: dict[str, Any],
    device: str,
    out_dir: Path,
    options: TrainerOptions = DEFAULT_OPTIONS,
) -> dict[str, str]:
    """Train inside the MLflow run of ``run_key`` (found by its tag, created once): params, per-epoch
    metrics, weights and a pyfunc model. A retry of a finished training returns the finished run.

    Returns ``run_id``, ``model_uri`` and ``weights`` (the local best weights).
    """
    import mlflow

    prepare_offline()
    from ultralytics import settings as yolo_settings

    yolo_settings.update({"mlflow": False})  # our own callback logs, once, with MLflow-safe names
    registry.use_globally(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    previous = run_of(tracking_uri, experiment_id, run_key)
    if previous is not None and previous.info.status == "FINISHED" and MODEL_URI_TAG in previous.data.tags:
        local = mlflow.artifacts.download_artifacts(
            run_id=previous.info.run_id, artifact_path="weights", dst_path=str(out_dir / "reused")
        )
        weights = sorted(Path(local).rglob("*.pt"))[0]
        print(f"run {run_key} already trained in MLflow run {previous.info.run_id}: reused (a retried task)")
        return {"run_id": previous.info.run_id, "model_uri": previous.data.tags[MODEL_URI_TAG], "weights": str(weights)}
    if previous is not None:
        started = mlflow.start_run(run_id=previous.info.run_id)
        print(f"run {run_key}: resuming MLflow run {previous.info.run_id} (an earlier attempt did not finish)")
    else:
        started = mlflow.start_run(run_name=run_key, tags=run_tags)
    with started as run:
        if previous is None:
            effective = training_arguments({"imgsz": imgsz, "batch": batch, **hyperparameters})
            mlflow.log_params({"base": base, "epochs": epochs, "device": device, **effective})

        if previous is None:
            log_lineage(data_yaml.parent)
        weights = train(
            on_epoch=epoch_logger(epochs),
            data_yaml=data_yaml,
            base=base,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            hyperparameters=hyperparameters,
            device=device,
            out_dir=out_dir,
            options=options,
        )
        mlflow.log_artifact(str(weights), artifact_path="weights")
        for plot in sorted(weights.parent.parent.iterdir()):  # the training folder: weights/ is below it
            if plot.is_file() and plot.suffix in PLOT_SUFFIXES:
                mlflow.log_artifact(str(plot), artifact_path="plots")
        info = log_detector(weights, example=_example_image(data_yaml))
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
        return {"run_id": run.info.run_id, "model_uri": info.model_uri, "weights": str(weights)}


def _example_image(data_yaml: Path) -> bytes | None:
    """A validation image of the dataset, shrunk to at most 64 pixels and JPEG-encoded: the model's input
    example (None when the split holds no image Pillow can read)."""
    import io

    import yaml
    from PIL import Image, UnidentifiedImageError

    data = yaml.safe_load(data_yaml.read_text())
    folder = Path(data.get("path") or data_yaml.parent) / data["val"]
    for path in sorted(folder.iterdir()):
        try:
            with Image.open(path) as image:
                small = image.convert("RGB")
                small.thumbnail((64, 64))
                encoded = io.BytesIO()
                small.save(encoded, format="JPEG", quality=85)
                return encoded.getvalue()
        except (UnidentifiedImageError, OSError):
            continue
    return None


def log_detector(weights: Path, *, example: bytes | None = None) -> Any:
    """Log the weights as a portable pyfunc model in the active MLflow run (``pipelines/pyfunc.py`` as a model
    from code: serving needs MLflow, Ultralytics and torch, not this project), with its signature and an input
    example; returns MLflow's ``ModelInfo``."""
    import mlflow

    from pipelines import pyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(pyfunc.__file__)),
        artifacts={"weights": str(weights)},
        signature=pyfunc.signature(),
        input_example=({"image": [example]}, {"conf": pyfunc.DEFAULT_PARAMS["conf"]}) if example is not None else None,
        pip_requirements=["ultralytics>=8.3,<9", "torch", "pillow", "pandas"],
    )


def log_lineage(dataset_dir: Path) -> None:
    """The dataset in the active MLflow run: ``mlflow.log_input`` of the snapshot (its source, name and
    fingerprint: MLflow's UI shows the lineage), and the manifest and validation report as artifacts under
    ``lineage/``."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    with warnings.catch_warnings():  # a file:// URI matches two equivalent local sources; MLflow warns
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(manifest["source"]))
    # MLflow keeps at most 36 characters of a digest; the whole fingerprint is the run's tag.
    snapshot = MetaDataset(  # type: ignore[abstract]  # MLflow's documented way; `profile` has a default
        source=source, name=str(manifest["dataset"]), digest=str(manifest["fingerprint"])[:36]
    )
    mlflow.log_input(snapshot, context="training")
    for name in ("manifest.json", "validation_report.json"):
        if (dataset_dir / name).exists():
            mlflow.log_artifact(str(dataset_dir / name), artifact_path="lineage")


def weights_digest(weights: Path) -> str:
    """SHA-256 of a weights file's tensors (the EMA model Ultralytics saves, else the model), by name: two
    trainings that produced the same model give the same digest, whatever else the files hold."""
    import hashlib

    import torch

    state = torch.load(weights, map_location="cpu", weights_only=False)
    model = state.get("ema") or state["model"]
    digest = hashlib.sha256()
    for name, tensor in sorted(model.float().state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


#: The arguments that Ultralytics' automatic optimizer choice ignores (it logs "ignoring 'lr0=...'").
OPTIMIZER_ARGUMENTS = ("lr0", "momentum")
#: The optimizer named when the rule sets or tunes one of them and leaves the optimizer to Ultralytics.
EXPLICIT_OPTIMIZER = "SGD"


def training_arguments(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters as Ultralytics must receive them for each to reach the optimizer: with
    ``optimizer`` unset or ``auto``, Ultralytics picks its own optimizer and learning rate and ignores ``lr0``
    and ``momentum``, so whenever either is given the optimizer is named (:data:`EXPLICIT_OPTIMIZER`)."""
    arguments = dict(hyperparameters)
    if arguments.get("optimizer", "auto") == "auto" and any(k in arguments for k in OPTIMIZER_ARGUMENTS):
        arguments["optimizer"] = EXPLICIT_OPTIMIZER
    return arguments


def train(
    *,
    data_yaml: Path,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    hyperparameters: dict[str, Any],
    device: str,
    out_dir: Path,
    on_epoch: Any = None,
    options: TrainerOptions = DEFAULT_OPTIONS,
) -> Path:
    """Train from ``base`` (a weights file or a model config: :func:`pipelines.steps.bases.model_argument`)
    and return the best weights; ``on_epoch(trainer)`` is called after each epoch's validation."""
    prepare_offline()
    from ultralytics import YOLO

    model = YOLO(base)
    if on_epoch is not None:
        model.add_callback("on_fit_epoch_end", on_epoch)
    arguments = training_arguments({"imgsz": imgsz, "batch": batch, **hyperparameters})  # tuned ones win
    if arguments.get("optimizer") != hyperparameters.get("optimizer"):
        given = ", ".join(f"{k}={arguments[k]}" for k in OPTIMIZER_ARGUMENTS if k in arguments)
        print(f"optimizer: {arguments['optimizer']} (the rule sets {given}, which optimizer=auto would ignore)")
    model.train(
        data=str(data_yaml),
        epochs=epochs,
        device=device,
        workers=loaders.workers_for_shm(options.workers, batch=arguments.get("batch"), imgsz=arguments.get("imgsz")),
        plots=options.plots,
        project=str(out_dir),
        name="train",
        exist_ok=True,
        seed=0,
        deterministic=options.deterministic,
        verbose=False,
        amp=device != "cpu",
        **arguments,
    )
    best = Path(model.trainer.best)
    return best if best.exists() else Path(model.trainer.last)
