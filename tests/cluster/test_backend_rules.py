"""The KFP backend's rules the stand-in applies (tests.support.kfp_backend), and the project's pipelines held to
them: the declared minimum backend runs every shipped shape, retries as Argo reads them, requests on every
task, no NaN between tasks, workers sized to the shared memory a container has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import settings
from pipelines import graph
from pipelines.arguments import Shape
from pipelines.steps import loaders, searching, tuning
from tests.support import kfp_backend
from tests.support.paths import ROOT

pytestmark = pytest.mark.cluster

HOUR = 3600.0


def compiled(tmp_path: Path, shape: Shape, config: settings.PipelineSettings | None = None) -> list[dict[str, Any]]:
    path = graph.compile_to(
        tmp_path / "p.yaml", image="trainer:test", config=config or settings.PipelineSettings(), shape=shape
    )
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


SHAPES = [Shape(tune=True, parallelism=2, gpus=1), Shape(tune=False, gpus=0), Shape(tune=True, parallelism=1, gpus=0)]


@pytest.mark.parametrize("shape", SHAPES, ids=["tuned-gpu", "cpu", "tuned-cpu"])
def test_the_declared_minimum_backend_runs_every_shape_and_an_older_one_is_told_why(
    shape: Shape, tmp_path: Path
) -> None:
    documents = compiled(tmp_path, shape)
    minimum = settings.KfpSettings().min_backend_version
    assert kfp_backend.refusal(documents, minimum) is None
    needed = max(kfp_backend.version(kfp_backend.FEATURES[f][0]) for f in kfp_backend.features_of(documents))
    assert needed == kfp_backend.version(minimum) or not shape.tune  # the minimum is no higher than needed
    if shape.tune:
        assert {"collected", "retry_in_parallel_for"} <= kfp_backend.features_of(documents)
        refused = kfp_backend.refusal(documents, "2.5.0")
        assert refused is not None
        assert "dsl.Collected fan-in of a ParallelFor needs 2.14.0 (kubeflow/pipelines#11725" in refused
        assert "set_retry on a task inside a ParallelFor needs 2.14.0 (kubeflow/pipelines#11908)" in refused


def test_the_readme_states_the_minimum_with_the_source_of_each_feature() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    minimum = settings.KfpSettings().min_backend_version
    assert f"KFP backend {minimum} or newer" in readme
    for feature_version, source, _ in kfp_backend.FEATURES.values():
        assert f"{feature_version} ({source.split(' ')[0]}" in readme, source


def test_argo_bounds_the_whole_retry_window_and_does_not_retry_a_lost_pod() -> None:
    strategy = kfp_backend.RetryStrategy(limit=2, duration_s=30, factor=2, max_duration_s=600)
    crashed = [kfp_backend.Attempt(started=0, finished=3 * HOUR, phase="Failed", message="exit 137")]
    # kfp.local reads 600 s as the longest wait and retries; Argo's window closed 10 minutes after the start.
    assert kfp_backend.next_attempt(strategy, crashed, now=3 * HOUR) == (None, "Max duration limit exceeded")
    quick = [kfp_backend.Attempt(started=0, finished=60, phase="Failed")]
    assert kfp_backend.next_attempt(strategy, quick, now=60) == (30, "")
    twice = [*quick, kfp_backend.Attempt(started=90, finished=560, phase="Failed")]
    assert kfp_backend.next_attempt(strategy, twice, now=560) == (None, "Backoff would exceed max duration limit")
    lost = [kfp_backend.Attempt(started=0, finished=60, phase="Error", message="pod deleted")]
    assert kfp_backend.next_attempt(strategy, lost, now=60) == (None, "pod deleted")  # OnFailure
    always = kfp_backend.RetryStrategy(limit=2, duration_s=30, factor=2, max_duration_s=600, policy="Always")
    assert kfp_backend.next_attempt(always, lost, now=60) == (30, "")
    three = [kfp_backend.Attempt(started=i, finished=i, phase="Failed") for i in range(3)]
    assert kfp_backend.next_attempt(strategy, three, now=3) == (None, "No more retries left")
    assert kfp_backend.retried_deadline(strategy, crashed) == 600


def test_the_project_s_retry_window_lets_a_task_that_failed_after_hours_run_again(tmp_path: Path) -> None:
    config = settings.PipelineSettings()
    documents = compiled(tmp_path, Shape(tune=True, parallelism=2, gpus=1), config)
    tasks = documents[0]["root"]["dag"]["tasks"]
    strategy = kfp_backend.RetryStrategy.of(tasks["train-model"]["retryPolicy"])
    assert strategy is not None and strategy.max_duration_s == config.retry_window()
    assert config.retry_window() >= (config.retries + 1) * config.task_timeout_s
    crashed = [kfp_backend.Attempt(started=0, finished=3 * HOUR, phase="Failed")]
    assert kfp_backend.next_attempt(strategy, crashed, now=3 * HOUR) == (config.retry_backoff_s, "")
    # The retried pod still has a full task timeout before the window closes.
    deadline = kfp_backend.retried_deadline(strategy, crashed)
    assert deadline is not None and deadline - 3 * HOUR - config.retry_backoff_s >= config.task_timeout_s


@pytest.mark.parametrize("shape", SHAPES, ids=["tuned-gpu", "cpu", "tuned-cpu"])
def test_every_task_of_every_shape_has_requests_and_limits_a_quota_accepts(shape: Shape, tmp_path: Path) -> None:
    executors = compiled(tmp_path, shape)[0]["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        assert kfp_backend.quota_refusal(executor) is None, label
        assert executor["container"]["resources"].get("resourceMemoryLimit"), label
    refused = kfp_backend.quota_refusal({"container": {"image": "x"}})
    assert refused is not None and "must specify requests.cpu,requests.memory" in refused


def test_heavy_tasks_mount_shared_memory_and_workers_fit_what_a_container_has(tmp_path: Path) -> None:
    documents = compiled(tmp_path, Shape(tune=True, parallelism=2, gpus=0))
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for label in ("exec-train-model", "exec-run-trial", "exec-evaluate-and-promote"):
        assert [m["mountPath"] for m in platform[label]["emptyDirMounts"]] == ["/dev/shm"], label
    shm = tmp_path / "shm"
    shm.mkdir()  # statvfs of this folder: the file system it is on is far larger than 64 MiB
    assert loaders.workers_for_shm(3, batch=16, imgsz=640, shm=shm) == 3
    assert loaders.workers_for_shm(3, batch=16, imgsz=640, shm=tmp_path / "absent") == 0
    assert loaders.workers_for_shm(0, batch=16, imgsz=640, shm=shm) == 0


def test_workers_for_a_64_mib_shm_are_none_at_640_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stats:
        f_blocks = 64 * 2**20 // 4096
        f_frsize = 4096

    monkeypatch.setattr(loaders.os, "statvfs", lambda path: Stats())
    assert loaders.workers_for_shm(4, batch=16, imgsz=640) == 0  # 39 MiB a worker, 32 MiB budget
    assert loaders.workers_for_shm(4, batch=16, imgsz=320) == 3  # 9.8 MiB a worker
    assert loaders.workers_for_shm(4, batch=-1, imgsz=640) == 0  # auto batch: counted as 16


def test_outputs_are_parsed_as_protojson_and_a_trial_without_metrics_writes_null_with_a_reason() -> None:
    with pytest.raises(ValueError, match="NaN"):
        kfp_backend.parse_strict('{"parameterValues": {"Output": {"map50_95": NaN}}}')
    trial = {"tuning_run_id": "r1"}
    result = searching._result(3, {"lr0": 0.01}, trial, {}, pruned=True)
    assert result["map50_95"] is None and result["map50"] is None
    assert result["missing"] == "trial 3 has no finite map50, map50_95 (stopped before a validation)"
    assert kfp_backend.parse_strict(json.dumps({"parameterValues": {"Output": result}}))
    nan = searching._result(4, {}, trial, {"map50_95": float("nan"), "map50": 0.5}, pruned=False)
    assert nan["map50_95"] is None and nan["map50"] == 0.5
    picked = tuning.pick_best([result, nan, searching._result(5, {}, trial, {"map50_95": 0.1}, pruned=False)])
    assert picked["number"] == 5
