"""The KFP API launcher: runs on a Kubeflow Pipelines cluster through ``kfp.Client``.

- The compiled pipeline is uploaded once per content hash (``retrain-yolo-<sha256[:12]>``), so every run
  references the exact pipeline version it was compiled as.
- Runs are created in one experiment per rule (``retrain-<rule>``) with ``run_name = run_key``. KFP has no
  idempotency key, so before creating, the run is looked up by that name: a retry or a restarted daemon
  finds the run instead of submitting a second one.
- States are polled with ``get_run`` (``wait_for_run_completion`` does not stop on CANCELED) and mapped to
  the daemon's: PENDING/RUNNING/PAUSED/CANCELING -> running, SUCCEEDED/SKIPPED -> succeeded,
  FAILED/CANCELED -> failed.
- Authentication: a bearer token, or the pod's projected service-account token.
- The backend's release (``tag_name`` of ``/apis/v2beta1/healthz``, KFP's ``apiserver/main.go``) is checked
  once against ``kfp.min_backend_version`` before the first submission: an older backend is refused with the
  features it lacks, instead of a run that fails on the cluster.
- A run that FAILED (not one cancelled) is retried through KFP's retry API (``runs/ID:retry``: Argo keeps
  the succeeded steps) up to ``kfp.run_retries`` times: as KFP compiles retries, Argo retries a task whose
  container failed but not a pod lost with its node (see :mod:`pipelines.graph` and the README).

kfp and kfp-server-api errors are translated here: connection problems and 5xx are temporary, 4xx permanent.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon import errors, logs
from daemon.launchers import base
from daemon.model import ids, runs

log = logs.get_logger(__name__)

_STATES = {
    "PENDING": runs.RunState.RUNNING,
    "RUNNING": runs.RunState.RUNNING,
    "PAUSED": runs.RunState.RUNNING,
    "CANCELING": runs.RunState.RUNNING,
    "RUNTIME_STATE_UNSPECIFIED": runs.RunState.RUNNING,
    "SUCCEEDED": runs.RunState.SUCCEEDED,
    "SKIPPED": runs.RunState.SUCCEEDED,
    "FAILED": runs.RunState.FAILED,
    "CANCELED": runs.RunState.FAILED,
}


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _release(text: str) -> tuple[int, ...]:
    """``2.14.0`` (``v2.14.0``, ``2.14.0-rc.1``) as a comparable tuple; ValueError for anything else."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if found is None:
        raise ValueError(text)
    return tuple(int(part) for part in found.groups())


class KfpLauncher(base.Launcher):
    """Submits and finds runs on a KFP API server.

    Args:
        host: the KFP API URL.
        namespace: the namespace (KFP profile) runs are created in.
        token: a bearer token, or None.
        use_service_account_token: authenticate with the pod's service-account token.
        request_timeout_s: connect and read timeout of every API request (the kfp client sets none: a server
            that accepts and never answers would hold the caller forever).
        package_for: compiles the pipeline for a spec's shape and returns the IR YAML file.
    """

    name = "kfp"

    def __init__(
        self,
        *,
        host: str,
        namespace: str,
        package_for: Callable[[dict[str, Any]], Path],
        token: str | None = None,
        use_service_account_token: bool = False,
        request_timeout_s: float = 30.0,
        min_backend_version: str = "2.14.0",
        run_retries: int = 1,
    ) -> None:
        self.host = host
        self.min_backend_version = min_backend_version
        self.run_retries = run_retries
        self._backend_checked = False
        self._retried: dict[str, int] = {}
        self.request_timeout_s = request_timeout_s
        self.namespace = namespace
        self.package_for = package_for
        self.token = token
        self.use_service_account_token = use_service_account_token
        self._client: Any = None

    def _fail(self, exc: Exception, doing: str) -> errors.RetrainError:
        status = getattr(exc, "status", None)
        detail = errors.truncate(f"{doing}: {getattr(exc, 'reason', '')} {getattr(exc, 'body', '') or exc}".strip())
        if isinstance(status, int) and 400 <= status < 500:
            return errors.PermanentError(f"KFP at {self.host} refused {detail}")
        return errors.ServiceUnavailable(service="KFP", endpoint=self.host, detail=detail)

    def client(self) -> Any:
        if self._client is None:
            import kfp
            from kfp.client import ServiceAccountTokenVolumeCredentials

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
                try:
                    self._client = kfp.Client(
                        host=self.host,
                        namespace=self.namespace,
                        existing_token=self.token,
                        credentials=ServiceAccountTokenVolumeCredentials() if self.use_service_account_token else None,
                    )
                except Exception as exc:
                    raise self._fail(exc, "connecting") from exc
            self._bound(self._client)
        return self._client

    def _bound(self, client: Any) -> None:
        """Give every request of the client a deadline (kfp passes none, and urllib3 then waits forever)."""
        rest = client._run_api.api_client.rest_client
        unbounded = rest.request
        timeout = (min(10.0, self.request_timeout_s), self.request_timeout_s)

        def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
            return unbounded(*args, _request_timeout=_request_timeout or timeout, **kwargs)

        rest.request = request

    def _pipeline_version(self, package: Path) -> tuple[str, str]:
        """Upload the package unless a pipeline with its content hash exists; return its ids."""
        name = f"retrain-yolo-{hashlib.sha256(package.read_bytes()).hexdigest()[:12]}"
        client = self.client()
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(str(package), pipeline_name=name).pipeline_id
            log.info("pipeline_uploaded", name=name, pipeline_id=pipeline_id)
        versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc").pipeline_versions
        if not versions:
            raise errors.PermanentError(f"KFP pipeline {name} ({pipeline_id}) has no version")
        return pipeline_id, versions[0].pipeline_version_id

    def _status(self, run_key: ids.RunKey, run: Any) -> base.RunStatus:
        state = _STATES.get(str(run.state), runs.RunState.RUNNING)
        error = None
        if state is runs.RunState.FAILED:
            error = f"KFP run {run.run_id} ended {run.state}" + (
                f": {run.error}" if getattr(run, "error", None) else ""
            )
        since, reason = self._pending(run)
        history = getattr(run, "state_history", None) or []
        failures = sum(1 for entry in history if str(getattr(entry, "state", "")) == "FAILED")
        retried = max(failures - 1, self._retried.get(run_key, 0))  # the history, or this process's count
        retryable = str(run.state) == "FAILED" and retried < self.run_retries
        return base.RunStatus(
            run_key=run_key,
            state=state,
            backend_run_id=str(run.run_id),
            error=error,
            retryable=retryable,
            pending_since=since,
            pending_reason=reason,
        )

    def _pending(self, run: Any) -> tuple[datetime | None, str | None]:
        """Since when the run waits to start, and what waits: the run itself (its workflow not started) or a task
        whose pod is Pending (KFP reports Argo's node phases as task states; a missing Secret, an image that
        cannot be pulled, a quota or no free GPU all look the same from the KFP API)."""
        if str(run.state) == "PENDING":  # since it last became PENDING (a retried run does again), else its creation
            moments = [
                _utc(getattr(entry, "update_time", None))
                for entry in getattr(run, "state_history", None) or []
                if str(getattr(entry, "state", "")) == "PENDING"
            ]
            known = [m for m in moments if m is not None]
            since = known[-1] if known else _utc(getattr(run, "created_at", None))
            return since, f"KFP has not started run {run.run_id} (PENDING)"
        details = getattr(getattr(run, "run_details", None), "task_details", None) or []
        waiting = [t for t in details if str(getattr(t, "state", "")) == "PENDING"]
        if not waiting:
            return None, None
        task = min(waiting, key=lambda t: _utc(getattr(t, "create_time", None)) or datetime.max.replace(tzinfo=UTC))
        pods = [c.pod_name for c in getattr(task, "child_tasks", None) or [] if getattr(c, "pod_name", None)]
        where = f"pod {pods[0]}" if pods else "its pod"
        reason = (
            f"task {task.display_name} has not started: {where} is Pending in namespace {self.namespace} "
            f"(a missing Secret or image, a ResourceQuota, or no node with the GPU and memory it asks for; "
            f"`kubectl describe pod {pods[0] if pods else '<pod>'} -n {self.namespace}` says which)"
        )
        return _utc(getattr(task, "create_time", None)), reason

    def _check_backend(self) -> None:
        """Refuse a backend older than the pipelines need (once; an unknown release is let through, logged)."""
        if self._backend_checked:
            return
        try:
            reply = self.client()._healthz_api.healthz_service_get_healthz(_preload_content=False)
            release = str(json.loads(reply.data or b"{}").get("tag_name") or "unknown")
        except Exception as exc:
            raise self._fail(exc, "reading the backend's release") from exc
        self._backend_checked = True
        try:
            older = _release(release) < _release(self.min_backend_version)
        except ValueError:
            log.warning("kfp_backend_release_unknown", release=release, minimum=self.min_backend_version)
            return
        if older:
            self._backend_checked = False  # an upgrade is seen without a restart
            raise errors.PermanentError(
                f"KFP at {self.host} runs backend {release}, older than {self.min_backend_version} that the "
                "pipelines need (dsl.Collected fan-in of tuning trials: kubeflow/pipelines#11725; retries inside "
                "a ParallelFor: #11908); upgrade KFP (README: Deploy to a cluster)"
            )

    def retry(self, status: base.RunStatus) -> base.RunStatus:
        try:
            self.client()._run_api.run_service_retry_run(status.backend_run_id)
        except Exception as exc:
            raise self._fail(exc, f"retrying run {status.run_key}") from exc
        self._retried[status.run_key] = self._retried.get(status.run_key, 0) + 1
        log.warning("run_retried", run_key=status.run_key, kfp_run_id=status.backend_run_id, error=status.error)
        return base.RunStatus(run_key=status.run_key, state=runs.RunState.RUNNING, backend_run_id=status.backend_run_id)

    def find(self, run_key: ids.RunKey) -> base.RunStatus | None:
        predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": run_key}
        try:
            found = (
                self.client()
                .list_runs(
                    filter=json.dumps({"predicates": [predicate]}),
                    page_size=1,
                    sort_by="created_at desc",
                    namespace=self.namespace,
                )
                .runs
            )
        except errors.RetrainError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"looking up run {run_key}") from exc
        if not found:
            return None
        run = found[0]
        if str(run.state) in ("PENDING", "RUNNING"):  # its tasks' states come with the run itself
            try:
                run = self.client().get_run(run.run_id)
            except Exception as exc:
                raise self._fail(exc, f"reading run {run_key}") from exc
        return self._status(run_key, run)

    def cancel(self, run_key: ids.RunKey, *, reason: str) -> base.RunStatus | None:
        """Terminate the KFP run of this key (KFP moves it to CANCELING, then CANCELED: recorded as failed)."""
        status = self.find(run_key)
        if status is None or status.state.final:
            return status
        try:
            self.client().terminate_run(status.backend_run_id)
        except errors.RetrainError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"terminating run {run_key}") from exc
        log.info("run_cancelled", run_key=run_key, kfp_run_id=status.backend_run_id, reason=reason)
        return self.find(run_key)

    def submit(self, run_key: ids.RunKey, spec: dict[str, Any]) -> base.RunStatus:
        existing = self.find(run_key)
        if existing is not None:
            log.info("run_already_submitted", run_key=run_key, state=existing.state.value)
            return existing
        self._check_backend()
        try:
            package = self.package_for(spec)
        except (OSError, ValueError, TypeError) as exc:
            raise errors.PermanentError(f"compiling the pipeline for run {run_key} failed: {exc}") from exc
        try:
            pipeline_id, version_id = self._pipeline_version(package)
            experiment = self.client().create_experiment(
                name=f"retrain-{spec['arguments']['rule']}", namespace=self.namespace
            )
            run = self.client().run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=run_key,
                params=spec["arguments"],
                pipeline_id=pipeline_id,
                version_id=version_id,
                enable_caching=False,
            )
        except errors.RetrainError:
            raise
        except Exception as exc:
            raise self._fail(exc, f"creating run {run_key}") from exc
        log.info("run_submitted", run_key=run_key, kfp_run_id=run.run_id)
        return self._status(run_key, run)
