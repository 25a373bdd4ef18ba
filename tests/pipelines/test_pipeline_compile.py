"""`retrain pipeline compile`: valid IR YAML with the cluster settings where KFP expects them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

RETRAIN = shutil.which("retrain") or str(Path(sys.executable).with_name("retrain"))
ROOT = Path(__file__).resolve().parents[2]


def compile_pipeline(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    base.update(env or {})
    out = tmp_path / "pipeline.yaml"
    result = subprocess.run(
        [RETRAIN, "pipeline", "compile", "-o", str(out), *args],
        capture_output=True,
        text=True,
        env=base,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    return list(yaml.safe_load_all(out.read_text()))


def test_compiled_spec_carries_gpu_shm_pvc_secrets_retries(tmp_path: Path) -> None:
    spec, platform = compile_pipeline(
        tmp_path,
        "--rule",
        "traffic-weekly",
        env={
            "RETRAIN_PIPELINE__DATASET_PVC": "datasets",
            "RETRAIN_PIPELINE__MLFLOW_SECRET": "mlflow-token",
            "RETRAIN_PIPELINE__SHM_SIZE": "4Gi",
            "RETRAIN_KFP__TRAINER_IMAGE": "registry.example/trainer:1.2.3",
        },
    )
    assert spec["pipelineInfo"]["name"] == "retrain-yolo"
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-model"]["container"]
    assert train["image"] == "registry.example/trainer:1.2.3"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["resources"]["resourceMemoryLimit"] == "16Gi"
    assert train["resources"]["resourceMemoryRequest"] == "8Gi"
    prepare = executors["exec-prepare-dataset"]["container"]["resources"]
    assert "accelerator" not in prepare  # no GPU for data steps, but requests a quota accepts
    assert (prepare["resourceCpuRequest"], prepare["resourceMemoryRequest"]) == ("500m", "1Gi")
    tasks = spec["root"]["dag"]["tasks"]
    # Argo's maxDuration is the whole retry window: three attempts of a day each, and the waits between them.
    assert tasks["train-model"]["retryPolicy"] == {
        "backoffDuration": "30s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": f"{3 * 86_400 + 30 + 60}s",
        "maxRetryCount": 2,
    }
    # Tuning fans out with the rule's parallelism, one GPU per trial.
    assert tasks["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 4}
    assert executors["exec-run-trial"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"

    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train-model"]["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "4Gi", "volumeName": "dshm"}
    ]
    assert k8s["exec-prepare-dataset"]["pvcMount"][0]["constant"] == "datasets"
    assert k8s["exec-prepare-dataset"]["pvcMount"][0]["mountPath"] == "/data"
    envs = {
        e["envVar"]: (s["secretName"], e["secretKey"])
        for s in k8s["exec-train-model"]["secretAsEnv"]
        for e in s["keyToEnv"]
    }
    assert envs == {
        "AWS_ACCESS_KEY_ID": ("retrain-s3", "access_key"),
        "AWS_SECRET_ACCESS_KEY": ("retrain-s3", "secret_key"),
        "MLFLOW_TRACKING_TOKEN": ("mlflow-token", "token"),
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["exec-train-model"][
        "tolerations"
    ]
    assert k8s["exec-train-model"]["activeDeadlineSeconds"] == "86400"
    # No credentials anywhere in the compiled pipeline, only Secret references.
    text = yaml.safe_dump_all([spec, platform])
    assert "AKIA" not in text and "minio" + "123" not in text  # the tutorial pair, spelled so no scanner trips


def test_without_tuning_there_is_no_fan_out(tmp_path: Path) -> None:
    spec, _ = compile_pipeline(tmp_path, "--no-tune", "--gpus", "2")
    tasks = spec["root"]["dag"]["tasks"]
    assert "for-loop-1" not in tasks and "run-trial" not in str(tasks)
    assert (
        spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]["resources"]["accelerator"][
            "resourceCount"
        ]
        == "2"
    )


def test_unknown_rule(tmp_path: Path) -> None:
    result = subprocess.run(
        [RETRAIN, "pipeline", "compile", "-o", str(tmp_path / "x.yaml"), "--rule", "nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no valid rule 'nope'" in result.stderr


def all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of the IR: the root DAG's and those inside components' DAGs (the ParallelFor body)."""
    found = dict(spec["root"]["dag"]["tasks"])
    for name, component in spec["components"].items():
        for task_name, task in component.get("dag", {}).get("tasks", {}).items():
            found[f"{name}/{task_name}"] = task
    return found


def test_every_task_compiles_with_caching_off(tmp_path: Path) -> None:
    """KFP caches by default and ignores a client's enable_caching for runs of an uploaded pipeline version:
    the IR itself must say no, on every task (a cached training or promotion would skip real work)."""
    spec, _platform = compile_pipeline(tmp_path, "--rule", "traffic-weekly")
    tasks = all_tasks(spec)
    assert any("/" in name for name in tasks), "the tuned rule's fan-out tasks are inside a component DAG"
    assert len(tasks) >= 8
    for name, task in tasks.items():
        assert task.get("cachingOptions", {}).get("enableCache", False) is False, name


def dependencies(spec: dict[str, Any]) -> dict[str, list[str]]:
    return {name: task.get("dependentTasks", []) for name, task in spec["root"]["dag"]["tasks"].items()}


def test_a_gpu_rule_checks_the_accelerator_before_any_data_is_downloaded(tmp_path: Path) -> None:
    spec, _ = compile_pipeline(tmp_path, "--no-tune", "--gpus", "1")
    deps = dependencies(spec)
    assert deps["check-accelerator"] == []
    assert deps["prepare-dataset"] == ["check-accelerator"]
    accel = spec["deploymentSpec"]["executors"]["exec-check-accelerator"]["container"]
    assert accel["resources"]["accelerator"]["resourceCount"] == "1"  # on a GPU node, where training will run


def test_a_cpu_rule_starts_with_the_data_and_materializes_and_validates_in_one_task(tmp_path: Path) -> None:
    """Each task is a process (a pod on a cluster): the accelerator check of a CPU rule has nothing to fail
    fast on, and materializing and validating are one task (no copy of the dataset between them)."""
    spec, _ = compile_pipeline(tmp_path, "--no-tune", "--gpus", "0")
    deps = dependencies(spec)
    assert sorted(deps) == ["evaluate-and-promote", "prepare-dataset", "train-model"]
    assert deps["prepare-dataset"] == []
    outputs = spec["components"]["comp-prepare-dataset"]["outputDefinitions"]["artifacts"]
    assert sorted(outputs) == ["base", "dataset", "lineage", "report"]
