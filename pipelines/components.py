"""The pipeline's components: lightweight KFP components that run in the trainer image.

KFP ships each function's source to the trainer image, where it imports the project's own code
(``pipelines.steps``), so every import lives inside the function. The graph that wires them is
:mod:`pipelines.graph`.
"""

# No `from __future__ import annotations` here: KFP reads the component functions' annotations as objects.

from kfp import dsl


def check_accelerator(require_gpu: bool) -> str:
    """Report the devices torch sees; fail fast when a GPU is required and none is visible. The first task
    of a pipeline whose rule trains on GPUs, on a GPU node, before any data is downloaded; a CPU pipeline has
    no such task (nothing to fail fast on: its training step prints the same report)."""
    from pipelines.steps import accelerator

    return accelerator.check(require_gpu=require_gpu)


def prepare_dataset(
    manifest_uri: str,
    s3_endpoint: str,
    s3_secure: bool,
    val_fraction: float,
    base_model: str,
    base_if_no_champion: str,
    mlflow_tracking_uri: str,
    max_bad_fraction: float,
    max_background_fraction: float,
    dataset: dsl.Output[dsl.Dataset],
    lineage: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.Artifact],
    base: dsl.Output[dsl.Model],
) -> str:
    """Download or copy the snapshot's files into a YOLO dataset, checking each against the snapshot; check
    its labels and images (bad items excluded, too many bad ones fail the run before any GPU time is spent);
    resolve the base weights the training starts from. One task: each task costs a process start-up (a pod
    on the cluster), and validating in place spares a copy of the whole dataset."""
    import json
    import shutil
    from pathlib import Path

    from pipelines.steps import bases, materializing, validating

    out = Path(dataset.path)
    manifest = materializing.read_manifest(manifest_uri, s3_endpoint=s3_endpoint, s3_secure=s3_secure)
    summary = materializing.materialize(
        manifest, out_dir=out, s3_endpoint=s3_endpoint, s3_secure=s3_secure, val_fraction=val_fraction
    )
    shutil.copyfile(out / "manifest.json", lineage.path)
    dataset.metadata.update({"fingerprint": manifest.fingerprint, "items": len(manifest.items)})
    try:
        result = validating.validate(
            out,
            classes=len(summary["classes"]),
            max_bad_fraction=max_bad_fraction,
            max_background_fraction=max_background_fraction,
        )
    finally:
        if (out / "validation_report.json").exists():
            shutil.copyfile(out / "validation_report.json", report.path)
    for problem in result.problems:
        print(problem)
    used = bases.resolve(
        base_model,
        fallback=base_if_no_champion or None,
        out=Path(base.path),
        tracking_uri=mlflow_tracking_uri,
        s3_endpoint=s3_endpoint,
        s3_secure=s3_secure,
    )
    base.metadata.update({"source": used})
    print(f"base model: {used}")
    return json.dumps(summary | {"base": used, "validation": result.to_json()})


def sample_trials(
    space_json: str,
    trials: int,
    seed: int,
    mlflow_tracking_uri: str,
    experiment: str,
    run_key: str,
    rule: str,
) -> list:
    """Ask Optuna's TPE for the run's trials, warm-started from the rule's earlier trials in MLflow; create the
    run's tuning run (the trials' parent)."""
    import json

    from pipelines.steps import searching, tuning

    space = json.loads(space_json)
    parent = searching.tuning_run(
        tracking_uri=mlflow_tracking_uri, experiment=experiment, run_key=run_key, rule=rule, space=space, trials=trials
    )
    past = searching.history(
        tracking_uri=mlflow_tracking_uri, experiment=experiment, rule=rule, exclude_run_key=run_key
    )
    asked = tuning.suggest(space, trials=trials, seed=tuning.run_seed(seed, run_key), history=past)
    print(f"{len(past)} earlier trials of rule {rule} seen by the sampler; asked: {asked}")
    return [{"number": number, "params": params, "tuning_run_id": parent} for number, params in enumerate(asked)]


def run_trial(
    dataset: dsl.Input[dsl.Dataset],
    trial: dict,
    space_json: str,
    base_json: str,
    base: dsl.Input[dsl.Model],
    epochs: int,
    imgsz: int,
    batch: int,
    gpus: int,
    mlflow_tracking_uri: str,
    experiment: str,
    run_key: str,
    rule: str,
    trainer_json: str,
    metrics: dsl.Output[dsl.Metrics],
) -> dict:
    """Train a short trial (an MLflow child run of the tuning run, pruned when it falls behind the earlier
    trials) and report its validation mAP."""
    import json
    import tempfile
    from pathlib import Path

    from pipelines.steps import bases, searching, training

    with tempfile.TemporaryDirectory() as workdir:
        result = searching.run_trial(
            tracking_uri=mlflow_tracking_uri,
            experiment=experiment,
            run_key=run_key,
            rule=rule,
            trial=trial,
            space=json.loads(space_json),
            fixed=json.loads(base_json),
            data_yaml=Path(dataset.path) / "data.yaml",
            base=bases.model_argument(Path(base.path)),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            device=training.device_for(gpus),
            out_dir=Path(workdir),
            options=training.TrainerOptions.from_json(trainer_json),
        )
    for key in ("map50_95", "map50"):
        if result[key] is not None:  # null with a reason when the trial produced none (never NaN: protojson)
            metrics.log_metric(key, result[key])
    return result


def pick_best(results: list, base_json: str, mlflow_tracking_uri: str) -> str:
    """The hyperparameters of the best trial, on top of the rule's fixed ones; recorded on the tuning run."""
    import json

    from pipelines.steps import searching, tuning

    best = tuning.pick_best(results)
    pruned = sum(1 for r in results if r.get("pruned"))
    print(f"best trial: {best.get('number')} map50_95={best['map50_95']:.4f} params={best['params']} ({pruned} pruned)")
    searching.record_best(
        tracking_uri=mlflow_tracking_uri,
        tuning_run_id=str(best["tuning_run_id"]),
        best=best,
        trials=len(results),
        pruned=pruned,
    )
    return json.dumps({**json.loads(base_json), **best["params"]})


def train_model(
    dataset: dsl.Input[dsl.Dataset],
    hyperparameters_json: str,
    base: dsl.Input[dsl.Model],
    epochs: int,
    imgsz: int,
    batch: int,
    gpus: int,
    mlflow_tracking_uri: str,
    experiment: str,
    run_key: str,
    rule: str,
    code_version: str,
    trainer_json: str,
    model: dsl.Output[dsl.Model],
) -> str:
    """Train in full, tracked in MLflow under a run named by the run key; log a pyfunc model."""
    import json
    import shutil
    from pathlib import Path

    from daemon.model import tags
    from pipelines.steps import accelerator, bases, training

    accelerator.check(require_gpu=gpus > 0)  # the report (a CPU pipeline has no check-accelerator task)
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
        run_tags={
            tags.RULE: rule,
            tags.RUN_KEY: run_key,
            tags.DATASET_FINGERPRINT: str(fingerprint),
            tags.CODE_VERSION: code_version,
        },
        data_yaml=Path(dataset.path) / "data.yaml",
        base=bases.model_argument(Path(base.path)),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        hyperparameters=json.loads(hyperparameters_json),
        device=training.device_for(gpus),
        out_dir=out / "work",
        options=training.TrainerOptions.from_json(trainer_json),
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
    batch: int,
    trainer_json: str,
) -> str:
    """Evaluate candidate and champion on the same validation split; register (once per run key); move the
    alias if better. Returns the gate's outcome (:class:`daemon.model.outcomes.GateOutcome` as JSON)."""
    import json
    import tempfile
    from pathlib import Path

    from daemon.model import rules
    from daemon.registry import mlflow as registry
    from pipelines.steps import promoting, training

    info = json.loads(train_info)
    with tempfile.TemporaryDirectory() as workdir:
        outcome = promoting.evaluate_and_promote(
            registry_=registry.Mlflow(tracking_uri=mlflow_tracking_uri),
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
            batch=batch,
            options=training.TrainerOptions.from_json(trainer_json),
        )
    result = json.dumps(outcome.to_json())
    print(result)
    return result
