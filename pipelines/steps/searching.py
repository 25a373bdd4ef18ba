"""The hyperparameter search in MLflow: a run's tuning run, its trials as child runs, and the rule's earlier
trials read back for Optuna (:mod:`pipelines.steps.tuning`).

Every record is found by its tags before it is created, because KFP retries a failed task: a retried
``sample-trials`` finds its tuning run, a retried trial finds its child run (and returns its result if it
finished).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from daemon.model import tags
from daemon.registry import mlflow as registry
from pipelines.steps import training, tuning

SEARCH = "search"
TRIAL = "trial"
COMPLETE = "complete"
PRUNED = "pruned"


def experiment_id(tracking_uri: str, experiment: str) -> str:
    import mlflow

    registry.use_globally(tracking_uri)
    return str(mlflow.set_experiment(experiment).experiment_id)


def tuning_run(
    *, tracking_uri: str, experiment: str, run_key: str, rule: str, space: Mapping[str, Any], trials: int
) -> str:
    """The run's tuning run (the trials' parent), created once."""
    import mlflow

    found_in = experiment_id(tracking_uri, experiment)
    found = training.find_run(tracking_uri, found_in, {tags.TUNING_RUN_KEY: run_key, tags.TUNING_ROLE: SEARCH})
    if found is not None:
        return str(found.info.run_id)
    run_tags = {tags.TUNING_RUN_KEY: run_key, tags.TUNING_ROLE: SEARCH, tags.RULE: rule}
    with mlflow.start_run(run_name=f"{run_key}-tuning", tags=run_tags) as run:
        mlflow.log_params({"trials": trials, "space": json.dumps(dict(space), sort_keys=True)})
        return str(run.info.run_id)


def history(
    *, tracking_uri: str, experiment: str, rule: str, exclude_run_key: str | None = None, per_epoch: bool = False
) -> list[tuning.PastTrial]:
    """The rule's finished trials, newest first (at most :data:`tuning.MAX_HISTORY`), with their per-epoch
    validation mAP when ``per_epoch``."""
    client = registry.Mlflow(tracking_uri=tracking_uri)
    found_in = experiment_id(tracking_uri, experiment)
    role = registry.quoted(TRIAL, what="role")
    clause = f"tags.`{tags.TUNING_ROLE}` = {role} and tags.`{tags.RULE}` = {registry.quoted(rule, what='rule')}"
    runs = client.call(
        f"reading the earlier trials of rule {rule}",
        lambda: client.client.search_runs(
            [found_in], filter_string=clause, order_by=["attributes.start_time DESC"], max_results=tuning.MAX_HISTORY
        ),
    )
    past = []
    for run in runs:
        run_tags = run.data.tags
        state = run_tags.get(tags.TRIAL_STATE)
        value = run.data.metrics.get("map50_95")
        if state not in (COMPLETE, PRUNED) or value is None or run_tags.get(tags.TUNING_RUN_KEY) == exclude_run_key:
            continue
        try:
            params = json.loads(run_tags.get(tags.TRIAL_PARAMS, ""))
        except ValueError:
            continue
        intermediate: dict[int, float] = {}
        if per_epoch:
            run_id = str(run.info.run_id)
            with client.calling(f"reading the epochs of trial {run_id}"):
                points = client.client.get_metric_history(run_id, tuning.EPOCH_METRIC)
            intermediate = {int(p.step): float(p.value) for p in points if math.isfinite(float(p.value))}
        past.append(
            tuning.PastTrial(params=params, value=float(value), intermediate=intermediate, pruned=state == PRUNED)
        )
    return past


def finished_trial(*, tracking_uri: str, experiment: str, run_key: str, number: int) -> Any:
    """A trial's child run from an earlier attempt of its task (None: no attempt created one)."""
    return training.find_run(
        tracking_uri,
        experiment_id(tracking_uri, experiment),
        {tags.TUNING_RUN_KEY: run_key, tags.TUNING_ROLE: TRIAL, tags.TRIAL_NUMBER: str(number)},
    )


def record_best(*, tracking_uri: str, tuning_run_id: str, best: Mapping[str, Any], trials: int, pruned: int) -> None:
    """The search's result on the tuning run: the best trial, its parameters and value, how many were pruned."""
    client = registry.Mlflow(tracking_uri=tracking_uri)

    def record() -> None:
        if best.get("map50_95") is not None:
            client.client.log_metric(tuning_run_id, "best_map50_95", float(best["map50_95"]))
        client.client.log_metric(tuning_run_id, "trials_pruned", float(pruned))
        number = best.get("number")  # KFP hands numbers back as floats
        client.client.set_tag(tuning_run_id, "retrain.tuning.best_trial", "" if number is None else str(int(number)))
        client.client.set_tag(tuning_run_id, "retrain.tuning.best_params", tuning.params_json(best["params"]))
        client.client.set_tag(tuning_run_id, "retrain.tuning.trials", str(trials))

    client.call(f"recording the best trial on {tuning_run_id}", record)


def run_trial(
    *,
    tracking_uri: str,
    experiment: str,
    run_key: str,
    rule: str,
    trial: Mapping[str, Any],
    space: Mapping[str, Any],
    fixed: Mapping[str, Any],
    data_yaml: Any,
    base: str,
    epochs: int,
    imgsz: int,
    batch: int,
    device: str,
    out_dir: Any,
    options: training.TrainerOptions = training.DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """Train one trial in its MLflow child run, pruned when it falls behind the earlier trials; its result.
    A retried task returns the result its earlier attempt recorded."""
    import mlflow

    number, params = int(trial["number"]), dict(trial["params"])
    earlier = finished_trial(tracking_uri=tracking_uri, experiment=experiment, run_key=run_key, number=number)
    if earlier is not None and earlier.data.tags.get(tags.TRIAL_STATE) in (COMPLETE, PRUNED):
        print(f"trial {number} of {run_key} already ran in MLflow run {earlier.info.run_id}: reused (a retried task)")
        return _result(
            number, params, trial, earlier.data.metrics, pruned=earlier.data.tags[tags.TRIAL_STATE] == PRUNED
        )
    pruner = tuning.Pruner(
        space, history=history(tracking_uri=tracking_uri, experiment=experiment, rule=rule, per_epoch=True)
    )
    if earlier is not None:
        started = mlflow.start_run(run_id=earlier.info.run_id)
    else:
        started = mlflow.start_run(
            run_name=f"{run_key}-trial-{number}",
            parent_run_id=str(trial["tuning_run_id"]),
            tags={
                tags.TUNING_RUN_KEY: run_key,
                tags.TUNING_ROLE: TRIAL,
                tags.TRIAL_NUMBER: str(number),
                tags.RULE: rule,
                tags.TRIAL_PARAMS: tuning.params_json(params),
            },
        )
    with started:
        if earlier is None:
            mlflow.log_params({**params, "epochs": epochs})

        def judge(trainer: Any, epoch: int, value: float) -> None:
            if epoch <= epochs and pruner.should_stop(epoch, value):
                trainer.stop = True  # Ultralytics ends the training after this epoch
                print(f"trial {number}: pruned after epoch {epoch} (mAP50-95 {value:.4f} below the median)")

        hyperparameters = {**fixed, **params}
        weights = training.train(
            data_yaml=data_yaml,
            base=base,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            hyperparameters=hyperparameters,
            device=device,
            out_dir=out_dir,
            on_epoch=training.epoch_logger(epochs, then=judge, trial=number),
            options=options,
        )
        found = training.evaluate(
            weights=weights,
            data_yaml=data_yaml,
            imgsz=int(hyperparameters.get("imgsz", imgsz)),
            device=device,
            out_dir=out_dir / "val",
            batch=int(hyperparameters.get("batch", batch)),
            options=options,
        )
        values = {"map50_95": found.map50_95, "map50": found.map50}
        mlflow.log_metrics(values)
        pruned = pruner.pruned_at is not None
        mlflow.set_tags(
            {tags.TRIAL_STATE: PRUNED if pruned else COMPLETE, "retrain.trial.pruned_at": str(pruner.pruned_at or "")}
        )
    return _result(number, params, trial, values, pruned=pruned)


def _result(
    number: int, params: dict[str, Any], trial: Mapping[str, Any], metrics: Mapping[str, float], *, pruned: bool
) -> dict[str, Any]:
    found = {key: _finite_or_none(metrics.get(key)) for key in ("map50_95", "map50")}
    result: dict[str, Any] = {
        "number": number,
        "params": params,
        **found,
        "pruned": pruned,
        "tuning_run_id": trial["tuning_run_id"],
    }
    missing = sorted(key for key, value in found.items() if value is None)
    if missing:
        # KFP's launcher parses task outputs with protojson: a NaN there fails the task, so a metric the trial
        # never produced is null, with the reason.
        result["missing"] = f"trial {number} has no finite {', '.join(missing)} (stopped before a validation)"
    return result


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
