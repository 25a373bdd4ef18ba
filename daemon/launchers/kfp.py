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

kfp and kfp-server-api errors are translated here: connection problems and 5xx are temporary, 4xx permanent.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
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
    ) -> None:
        self.host = host
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
        return base.RunStatus(run_key=run_key, state=state, backend_run_id=str(run.run_id), error=error)

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
        return self._status(run_key, found[0]) if found else None

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
