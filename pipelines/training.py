"""The retraining pipeline (KFP v2): check accelerator -> materialize -> validate -> [tune] -> train ->
evaluate and promote.

One definition runs on a cluster through Kubeflow Pipelines and on a laptop through ``kfp.local``. The
component functions below are lightweight components: KFP ships their source to the trainer image, where
they import the project's own code (``pipelines.steps``), so every import lives inside the function.

The pipeline's shape follows the rule at compile time: with tuning, trials fan out in a ``ParallelFor``
with the rule's parallelism (one GPU each on the cluster) and the best one is trained in full; without,
training starts from the rule's hyperparameters. Cluster settings (GPU type and count, ``/dev/shm``, the
dataset PVC, secrets as environment, retries, timeouts, node selector, tolerations, the image) come from
``settings.pipeline`` and are ignored by ``kfp.local``.
"""

# No `from __future__ import annotations` here: KFP reads the component functions' annotations as objects.

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from daemon import settings as settings_mod
from daemon.model import rules as rules_mod

PIPELINE_NAME = "retrain-yolo"


# --- component functions (run in the trainer image) --------------------------------------------------


def check_accelerator(require_gpu: bool) -> str:
    """Report the devices torch sees; fail fast when a GPU is required and none is visible."""
    import json

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [
        {
            "name": torch.cuda.get_device_name(i),
            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
        }
        for i in range(count)
    ]
    report = {"cuda": torch.cuda.is_available(), "count": count, "devices": devices, "torch": torch.__version__}
    print(json.dumps(report))
    if require_gpu and count == 0:
        raise RuntimeError(
            "this run requires a GPU but torch sees none: check the node's GPU driver, the task's "
            "accelerator limit and the CUDA build of torch in the trainer image"
        )
    return json.dumps(report)


def materialize_dataset(
    manifest_uri: str,
    s3_endpoint: str,
    s3_secure: bool,
    val_fraction: float,
    dataset: dsl.Output[dsl.Dataset],
    lineage: dsl.Output[dsl.Artifact],
) -> str:
    """Download or copy the snapshot's files into a YOLO dataset, checking each against the snapshot."""
    import json
    import shutil
    from pathlib import Path

    from pipelines.steps import materializing

    manifest = materializing.read_manifest(manifest_uri, s3_endpoint=s3_endpoint, s3_secure=s3_secure)
    summary = materializing.materialize(
        manifest, out_dir=Path(dataset.path), s3_endpoint=s3_endpoint, s3_secure=s3_secure, val_fraction=val_fraction
    )
    shutil.copyfile(Path(dataset.path) / "manifest.json", lineage.path)
    dataset.metadata.update({"fingerprint": manifest.fingerprint, "items": len(manifest.items)})
    return json.dumps(summary)


def validate_dataset(
    raw: dsl.Input[dsl.Dataset],
    max_bad_fraction: float,
    dataset: dsl.Output[dsl.Dataset],
    report: dsl.Output[dsl.Artifact],
) -> str:
    """Check labels and images; exclude bad items; fail when too many are bad."""
    import json
    import shutil
    from pathlib import Path

    import yaml

    from pipelines.steps import validating

    out = Path(dataset.path)
    shutil.copytree(raw.path, out, dirs_exist_ok=True)
    dataset.metadata.update(raw.metadata)  # the snapshot fingerprint travels on
    data = yaml.safe_load((out / "data.yaml").read_text())
    data["path"] = str(out)
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        result = validating.validate(out, classes=len(data["names"]), max_bad_fraction=max_bad_fraction)
    finally:
        shutil.copyfile(out / "validation_report.json", report.path) if (
            out / "validation_report.json"
        ).exists() else None
    for problem in result.problems:
        print(problem)
    return json.dumps(result.to_json())


def sample_trials(space_json: str, trials: int, seed: int) -> list:
    """Sample the trials' hyperparameters from the rule's search space (deterministic)."""
    import json

    from pipelines.steps import tuning

    return tuning.sample_trials(json.loads(space_json), trials=trials, seed=seed)


def run_trial(
    dataset: dsl.Input[dsl.Dataset],
    params: dict,
    base_json: str,
    base_model: str,
    epochs: int,
    imgsz: int,
    batch: int,
    gpus: int,
    metrics: dsl.Output[dsl.Metrics],
) -> dict:
    """Train a short trial with one hyperparameter set and report its validation mAP."""
    import json
    import tempfile
    from pathlib import Path

    from pipelines.steps import training

    hyperparameters = {**json.loads(base_json), **params}
    device = training.device_for(gpus)
    data_yaml = Path(dataset.path) / "data.yaml"
    with tempfile.TemporaryDirectory() as workdir:
        weights = training.train(
            data_yaml=data_yaml,
            base=base_model,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            hyperparameters=hyperparameters,
            device=device,
            out_dir=Path(workdir),
        )
        result = training.evaluate(weights=weights, data_yaml=data_yaml, imgsz=imgsz, device=device)
    metrics.log_metric("map50_95", result.map50_95)
    metrics.log_metric("map50", result.map50)
    return {"params": params, "map50_95": result.map50_95, "map50": result.map50}


def pick_best(results: list, base_json: str) -> str:
    """The hyperparameters of the best trial, on top of the rule's fixed ones."""
    import json

    from pipelines.steps import tuning

    best = tuning.pick_best(results)
    print(f"best trial: map50_95={best['map50_95']:.4f} params={best['params']}")
    return json.dumps({**json.loads(base_json), **best["params"]})


def train_model(
    dataset: dsl.Input[dsl.Dataset],
    hyperparameters_json: str,
    base_model: str,
    epochs: int,
    imgsz: int,
    batch: int,
    gpus: int,
    mlflow_tracking_uri: str,
    experiment: str,
    run_key: str,
    rule: str,
    code_version: str,
    model: dsl.Output[dsl.Model],
) -> str:
    """Train in full, tracked in MLflow under a run named by the run key; log a pyfunc model."""
    import json
    import shutil
    from pathlib import Path

    from daemon import constants
    from pipelines.steps import training

    fingerprint = (
        dataset.metadata.get("fingerprint")
        or json.loads((Path(dataset.path) / "manifest.json").read_text())["fingerprint"]
    )
    out = Path(model.path)
    out.mkdir(parents=True, exist_ok=True)
    info = training.train_tracked(
        tracking_uri=mlflow_tracking_uri,
        experiment=experiment,
        run_key=run_key,
        tags={
            constants.TAG_RULE: rule,
            constants.TAG_RUN_KEY: run_key,
            constants.TAG_DATASET_FINGERPRINT: str(fingerprint),
            constants.TAG_CODE_VERSION: code_version,
        },
        data_yaml=Path(dataset.path) / "data.yaml",
        base=base_model,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        hyperparameters=json.loads(hyperparameters_json),
        device=training.device_for(gpus),
        out_dir=out / "work",
    )
    shutil.copyfile(info["weights"], out / "best.pt")
    shutil.rmtree(out / "work", ignore_errors=True)
    model.metadata.update({"mlflow_run_id": info["run_id"], "model_uri": info["model_uri"]})
    return json.dumps({"run_id": info["run_id"], "model_uri": info["model_uri"]})


def evaluate_and_promote(
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    train_info: str,
    registered_name: str,
    promotion_json: str,
    imgsz: int,
    gpus: int,
    mlflow_tracking_uri: str,
    run_key: str,
) -> str:
    """Evaluate candidate and champion on the same validation split; register; move the alias if better."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.tracking import MlflowClient

    from daemon.model import rules
    from pipelines.steps import promoting, training

    mlflow.set_tracking_uri(mlflow_tracking_uri)  # register_model and artifact downloads use the global URI
    info = json.loads(train_info)
    with tempfile.TemporaryDirectory() as workdir:
        decision = promoting.evaluate_and_promote(
            client=MlflowClient(tracking_uri=mlflow_tracking_uri),
            registered_name=registered_name,
            model_uri=info["model_uri"],
            run_id=info["run_id"],
            candidate_weights=Path(model.path) / "best.pt",
            data_yaml=Path(dataset.path) / "data.yaml",
            imgsz=imgsz,
            device=training.device_for(gpus),
            policy=rules.PromotionSpec.model_validate(json.loads(promotion_json)),
            run_key=run_key,
            workdir=Path(workdir),
        )
    print(json.dumps(decision))
    return json.dumps(decision)


# --- building the pipeline ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What the pipeline's graph depends on, fixed at compile time (from the rule)."""

    tune: bool = False
    parallelism: int = 1
    gpus: int = 1

    @classmethod
    def of(cls, rule: rules_mod.Rule | None) -> "Shape":
        if rule is None:
            return cls()
        tune = rule.training.tune
        return cls(tune=tune is not None, parallelism=tune.parallelism if tune else 1, gpus=rule.training.gpus)


def _components(image: str) -> dict[str, Any]:
    wrap = dsl.component(base_image=image, install_kfp_package=False)
    return {
        name: wrap(func)
        for name, func in {
            "check_accelerator": check_accelerator,
            "materialize_dataset": materialize_dataset,
            "validate_dataset": validate_dataset,
            "sample_trials": sample_trials,
            "run_trial": run_trial,
            "pick_best": pick_best,
            "train_model": train_model,
            "evaluate_and_promote": evaluate_and_promote,
        }.items()
    }


def _cluster(task: Any, config: settings_mod.PipelineSettings, *, gpus: int, data: bool) -> Any:
    """Apply the cluster settings to one task (kfp.local ignores all of them)."""
    task.set_retry(
        num_retries=config.retries,
        backoff_duration=f"{config.retry_backoff_s}s",
        backoff_factor=2.0,
        backoff_max_duration=f"{config.retry_backoff_max_s}s",
    )
    kubernetes.set_timeout(task, seconds=config.task_timeout_s)
    if config.s3_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=config.s3_secret,
            secret_key_to_env={"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"},
        )
    if config.mlflow_secret:
        kubernetes.use_secret_as_env(
            task, secret_name=config.mlflow_secret, secret_key_to_env={"token": "MLFLOW_TRACKING_TOKEN"}
        )
    if data and config.dataset_pvc:
        kubernetes.mount_pvc(task, pvc_name=config.dataset_pvc, mount_path=config.dataset_mount_path)
    if gpus > 0:
        task.set_accelerator_type(config.accelerator_type).set_accelerator_limit(gpus)
        task.set_cpu_request(config.cpu_request).set_memory_limit(config.memory_limit)
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=config.shm_size
        )
        for key, value in config.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in config.tolerations:
            kubernetes.add_toleration(
                task,
                key=toleration.get("key"),
                operator=toleration.get("operator", "Equal"),
                value=toleration.get("value"),
                effect=toleration.get("effect"),
            )
    return task


def build(*, image: str, config: settings_mod.PipelineSettings, shape: Shape) -> Any:
    """The pipeline for one shape, its tasks configured for the cluster."""
    c = _components(image)
    gpus = shape.gpus

    @dsl.pipeline(name=PIPELINE_NAME, description="Validate, tune, train, evaluate and promote a YOLO detector")
    def retrain(
        run_key: str,
        rule: str,
        manifest_uri: str,
        registered_name: str,
        base_model: str = "yolov8n.yaml",
        epochs: int = 100,
        imgsz: int = 640,
        batch: int = 16,
        hyperparameters_json: str = "{}",
        promotion_json: str = "{}",
        tune_space_json: str = "{}",
        tune_trials: int = 0,
        tune_epochs: int = 10,
        tune_seed: int = 0,
        mlflow_tracking_uri: str = "",
        experiment: str = "",
        s3_endpoint: str = "",
        s3_secure: bool = True,
        val_fraction: float = config.val_fraction,
        max_bad_fraction: float = config.max_bad_fraction,
        require_gpu: bool = False,
        code_version: str = "",
    ) -> str:
        accel = _cluster(c["check_accelerator"](require_gpu=require_gpu), config, gpus=gpus, data=False)
        accel.set_caching_options(False)
        mat = _cluster(
            c["materialize_dataset"](
                manifest_uri=manifest_uri, s3_endpoint=s3_endpoint, s3_secure=s3_secure, val_fraction=val_fraction
            ).after(accel),
            config,
            gpus=0,
            data=True,
        )
        val = _cluster(
            c["validate_dataset"](raw=mat.outputs["dataset"], max_bad_fraction=max_bad_fraction),
            config,
            gpus=0,
            data=False,
        )
        hyperparameters = hyperparameters_json
        if shape.tune:
            sampled = _cluster(
                c["sample_trials"](space_json=tune_space_json, trials=tune_trials, seed=tune_seed),
                config,
                gpus=0,
                data=False,
            )
            with dsl.ParallelFor(sampled.output, parallelism=shape.parallelism) as params:
                trial = _cluster(
                    c["run_trial"](
                        dataset=val.outputs["dataset"],
                        params=params,
                        base_json=hyperparameters_json,
                        base_model=base_model,
                        epochs=tune_epochs,
                        imgsz=imgsz,
                        batch=batch,
                        gpus=min(gpus, 1),
                    ),
                    config,
                    gpus=min(gpus, 1),
                    data=False,
                )
            best = _cluster(
                c["pick_best"](results=dsl.Collected(trial.outputs["Output"]), base_json=hyperparameters_json),
                config,
                gpus=0,
                data=False,
            )
            hyperparameters = best.output
        train = _cluster(
            c["train_model"](
                dataset=val.outputs["dataset"],
                hyperparameters_json=hyperparameters,
                base_model=base_model,
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                gpus=gpus,
                mlflow_tracking_uri=mlflow_tracking_uri,
                experiment=experiment,
                run_key=run_key,
                rule=rule,
                code_version=code_version,
            ),
            config,
            gpus=gpus,
            data=False,
        )
        promote = _cluster(
            c["evaluate_and_promote"](
                dataset=val.outputs["dataset"],
                model=train.outputs["model"],
                train_info=train.outputs["Output"],
                registered_name=registered_name,
                promotion_json=promotion_json,
                imgsz=imgsz,
                gpus=gpus,
                mlflow_tracking_uri=mlflow_tracking_uri,
                run_key=run_key,
            ),
            config,
            gpus=gpus,
            data=False,
        )
        return promote.output

    return retrain


def compile_to(path: Path, *, image: str, config: settings_mod.PipelineSettings, shape: Shape) -> Path:
    """Write the IR YAML that the KFP UI accepts."""
    compiler.Compiler().compile(build(image=image, config=config, shape=shape), package_path=str(path))
    return path


def arguments(
    *,
    rule: rules_mod.Rule,
    run_key: str,
    manifest_uri: str,
    mlflow_tracking_uri: str,
    s3_endpoint: str = "",
    s3_secure: bool = True,
    code_version: str = "",
) -> dict[str, Any]:
    """The pipeline's arguments for one run of ``rule``."""
    tune = rule.training.tune
    return {
        "run_key": run_key,
        "rule": rule.name,
        "manifest_uri": manifest_uri,
        "registered_name": rule.model.registered_name,
        "base_model": rule.model.base,
        "epochs": rule.training.epochs,
        "imgsz": rule.training.imgsz,
        "batch": rule.training.batch,
        "hyperparameters_json": json.dumps(rule.training.hyperparameters),
        "promotion_json": json.dumps(rule.promotion.model_dump(mode="json")),
        "tune_space_json": json.dumps({k: v.model_dump(mode="json") for k, v in tune.space.items()}) if tune else "{}",
        "tune_trials": tune.trials if tune else 0,
        "tune_epochs": tune.epochs if tune else 1,
        "tune_seed": tune.seed if tune else 0,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "experiment": rule.model.registered_name,
        "s3_endpoint": s3_endpoint,
        "s3_secure": s3_secure,
        "require_gpu": rule.training.gpus > 0,
        "code_version": code_version,
    }
