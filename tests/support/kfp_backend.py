"""The KFP backend's and Argo's rules, as the stand-in applies them (not kfp.local's).

Read from kubeflow/pipelines at 2.17.0 (backend/src/v2/compiler/argocompiler, backend/src/v2/component,
backend/src/apiserver) and argoproj/argo-workflows (workflow/controller/operator.go), 2026-12-07:

- **Feature versions.** A backend older than a feature's first release does not run an IR that uses it: its
  API server's protos reject unknown fields at run creation (``*Parameter`` secret/PVC fields) or its
  driver fails the run (``dsl.Collected``). :data:`FEATURES` lists the first release tag of each feature the
  project's pipelines use, with the change that brought it; :func:`features_of` finds them in an IR.
- **Retries are Argo's.** The compiler turns a task's ``retryPolicy`` into an Argo ``retryStrategy`` with
  ``limit`` and ``backoff {duration, factor, maxDuration}`` and no ``retryPolicy``
  (``argocompiler/container.go`` getTaskRetryStrategyFromInput, ~l.671-688), so Argo's default ``OnFailure``
  applies: a main container that exits non-zero (node phase Failed) is retried, a pod that is deleted (a lost
  node: "pod deleted", operator.go ~l.1341, node phase Error) is not. ``maxDuration`` bounds the whole retry
  window from the first attempt's start, and a retried pod's deadline is cut to that window's end
  (operator.go processNodeRetries, ~l.1077-1140); kfp.local reads it as the longest single wait.
- **Strict JSON between tasks.** The launcher parses the executor's output with Go's ``protojson``
  (``launcher_v2.go`` ~l.1232): ``NaN`` and ``Infinity`` are not JSON there.
- **Containers.** ``/dev/shm`` is 64 MiB unless the pod mounts a memory ``emptyDir`` there; in a namespace
  with a ResourceQuota (every Kubeflow profile has one) a pod without cpu and memory requests is refused at
  creation ("must specify requests.cpu, requests.memory").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

#: Feature -> (first backend release with it, the change, what it is).
FEATURES: dict[str, tuple[str, str, str]] = {
    "empty_dir": ("2.3.0", "kubeflow/pipelines 2.3.0 (emptyDir mounts)", "kubernetes.empty_dir_mount"),
    "task_retry": ("2.5.0", "kubeflow/pipelines#11673", "task.set_retry"),
    "parameter_secret_pvc": (
        "2.5.0",
        "kubeflow/pipelines#11501, #11770",
        "secretNameParameter/pvcNameParameter (kfp-kubernetes >= 1.4)",
    ),
    "collected": ("2.14.0", "kubeflow/pipelines#11725 (commit ed828b513a)", "dsl.Collected fan-in of a ParallelFor"),
    "retry_in_parallel_for": ("2.14.0", "kubeflow/pipelines#11908", "set_retry on a task inside a ParallelFor"),
}


def version(text: str) -> tuple[int, ...]:
    """``2.14.0`` (or ``v2.14.0``, ``2.14.0-rc.1``) as a comparable tuple."""
    found = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if found is None:
        raise ValueError(f"not a KFP release: {text!r}")
    return tuple(int(part or 0) for part in found.groups())


def _tasks(dag: dict[str, Any]) -> dict[str, Any]:
    return dict(dag.get("tasks") or {})


def features_of(documents: list[dict[str, Any]]) -> set[str]:
    """The features of :data:`FEATURES` an IR (its YAML documents: pipeline spec, platform spec) uses."""
    spec = documents[0]
    components = spec.get("components") or {}
    found: set[str] = set()
    loop_components: set[str] = set()
    dags = [spec.get("root", {}).get("dag", {})] + [c["dag"] for c in components.values() if "dag" in c]
    for dag in dags:
        for task in _tasks(dag).values():
            if "parameterIterator" in task or "artifactIterator" in task:
                loop_components.add(task["componentRef"]["name"])
            if "retryPolicy" in task:
                found.add("task_retry")
    for name in loop_components:
        body = components.get(name, {}).get("dag", {})
        if body.get("outputs"):
            found.add("collected")  # a loop that hands its iterations' outputs on is a fan-in
        if any("retryPolicy" in task for task in _tasks(body).values()):
            found.add("retry_in_parallel_for")
    for document in documents[1:]:
        executors = document.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        for config in executors.values():
            if config.get("emptyDirMounts"):
                found.add("empty_dir")
            items = [*config.get("secretAsEnv", []), *config.get("secretAsVolume", []), *config.get("pvcMount", [])]
            if any("secretNameParameter" in item or "pvcNameParameter" in item for item in items):
                found.add("parameter_secret_pvc")
    return found


def refusal(documents: list[dict[str, Any]], backend: str) -> str | None:
    """Why a backend of release ``backend`` refuses this IR, or None."""
    missing = [
        f"{FEATURES[name][2]} needs {FEATURES[name][0]} ({FEATURES[name][1]})"
        for name in sorted(features_of(documents))
        if version(FEATURES[name][0]) > version(backend)
    ]
    return f"KFP backend {backend} cannot run this pipeline: " + "; ".join(missing) if missing else None


# --- Argo's retries -------------------------------------------------------------------------------------------


def _seconds(value: Any) -> float:
    """An IR duration (``"30s"``) in seconds."""
    return float(str(value).removesuffix("s") or 0)


@dataclass(frozen=True, kw_only=True)
class RetryStrategy:
    """The Argo ``retryStrategy`` KFP's compiler makes of a task's ``retryPolicy``."""

    limit: int
    duration_s: float
    factor: float
    max_duration_s: float | None
    policy: str = "OnFailure"
    """KFP's compiler sets no ``retryPolicy``; Argo's ``RetryPolicyActual`` then answers ``OnFailure``."""

    @classmethod
    def of(cls, retry_policy: dict[str, Any] | None) -> RetryStrategy | None:
        if not retry_policy:
            return None
        maximum = retry_policy.get("backoffMaxDuration")
        return cls(
            limit=int(retry_policy.get("maxRetryCount", 0)),
            duration_s=_seconds(retry_policy.get("backoffDuration", "0s")),
            factor=float(retry_policy.get("backoffFactor", 0) or 0),
            max_duration_s=_seconds(maximum) if maximum is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One pod of a task: when it started and ended (the stand-in's clock), and its Argo node phase."""

    started: float
    finished: float
    phase: str
    """``Succeeded``, ``Failed`` (the main container exited non-zero) or ``Error`` (the pod was lost)."""
    message: str = ""


def next_attempt(strategy: RetryStrategy | None, attempts: list[Attempt], now: float) -> tuple[float | None, str]:
    """Argo's processNodeRetries: the wait before another attempt, or None and why the task ends there."""
    last = attempts[-1]
    if last.phase == "Succeeded":
        return None, ""
    if strategy is None:
        return None, last.message
    deadline = attempts[0].started + strategy.max_duration_s if strategy.max_duration_s is not None else None
    if deadline is not None and now > deadline:
        return None, "Max duration limit exceeded"
    wait = strategy.duration_s
    if strategy.factor > 0:
        wait = strategy.duration_s * int(strategy.factor) ** (len(attempts) - 1)  # Argo reads the factor as int32
    if deadline is not None and last.finished + wait > deadline:
        return None, "Backoff would exceed max duration limit"
    retry_failed = strategy.policy in ("Always", "OnFailure")
    retry_error = strategy.policy in ("Always", "OnError")
    if (last.phase == "Failed" and not retry_failed) or (last.phase == "Error" and not retry_error):
        return None, last.message
    if len(attempts) > strategy.limit:
        return None, "No more retries left"
    return wait, ""


def retried_deadline(strategy: RetryStrategy | None, attempts: list[Attempt]) -> float | None:
    """When a retried pod is stopped: the end of the retry window (operator.go sets executionDeadline)."""
    if strategy is None or strategy.max_duration_s is None or not attempts:
        return None
    return attempts[0].started + strategy.max_duration_s


# --- strict JSON --------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"invalid value {name} (protojson: not a JSON number)")


def parse_strict(text: str) -> Any:
    """Parse as Go's protojson would: ``NaN``, ``Infinity`` and ``-Infinity`` are errors."""
    value = json.loads(text, parse_constant=_refuse_constant)
    return value


def non_finite(value: Any) -> bool:
    """Does a (leniently parsed) value hold NaN or an infinity anywhere, such as inside a JSON string output?"""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(non_finite(v) for v in value)
    return False


# --- containers ---------------------------------------------------------------------------------------------

#: A container's /dev/shm without a memory emptyDir (the container runtime's default).
DEFAULT_SHM = "64Mi"


def quota_refusal(executor: dict[str, Any]) -> str | None:
    """Why a namespace with a ResourceQuota on cpu and memory refuses this task's pod, or None."""
    resources = executor.get("container", {}).get("resources", {})
    missing = [
        name
        for name, keys in (
            ("requests.cpu", ("cpuRequest", "resourceCpuRequest")),
            ("requests.memory", ("memoryRequest", "resourceMemoryRequest")),
        )
        if not any(resources.get(key) for key in keys)
    ]
    if not missing:
        return None
    return "pods is forbidden: failed quota: kf-resource-quota: must specify " + ",".join(missing)
