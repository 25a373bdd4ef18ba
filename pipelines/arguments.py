"""A run's arguments and the pipeline's shape, built without kfp: the daemon launches runs with these, and
its process never imports kfp to do so (import-linter checks this module; only the KFP launcher and the
``pipeline compile`` command compile the graph in :mod:`pipelines.graph`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from daemon.model import rules as rules_mod

PIPELINE_NAME = "retrain-yolo"


@dataclass(frozen=True, kw_only=True)
class Shape:
    """What the pipeline's graph depends on, fixed at compile time (from the rule)."""

    tune: bool = False
    parallelism: int = 1
    gpus: int = 1

    @classmethod
    def of(cls, rule: rules_mod.Rule | None) -> Shape:
        if rule is None:
            return cls()
        tune = rule.training.tune
        return cls(tune=tune is not None, parallelism=tune.parallelism if tune else 1, gpus=rule.training.gpus)


def fixed_hyperparameters(training: rules_mod.TrainingSpec) -> dict[str, Any]:
    """The rule's fixed Ultralytics arguments, with its optimizer unless it left the choice to Ultralytics."""
    fixed: dict[str, Any] = dict(training.hyperparameters)
    if training.optimizer != "auto":
        fixed["optimizer"] = training.optimizer
    return fixed


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
        "base_if_no_champion": rule.model.base_if_no_champion or "",
        "epochs": rule.training.epochs,
        "imgsz": rule.training.imgsz,
        "batch": rule.training.batch,
        "hyperparameters_json": json.dumps(fixed_hyperparameters(rule.training)),
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
