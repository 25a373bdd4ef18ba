"""MLflow adapter: reads what drift checks and status need from the tracking server and registry.

MLflow exceptions never leave this module: "not found" becomes ``None``, anything else a
:class:`~daemon.errors.ServiceUnavailable` naming the server.
"""

from __future__ import annotations

import os
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from daemon import constants, errors, settings

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})


def configure(config: settings.MlflowSettings) -> None:
    """Apply the request policy. MLflow reads its HTTP retries and timeout from the environment only
    (its default of 7 retries with exponential backoff holds a call for minutes on an unreachable
    server), so the daemon sets them once at start-up, before the first request."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(config.max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(config.request_timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"


class _Mlflow:
    """An MLflow client opened on first use: the daemon starts, and keeps running, whatever state MLflow is in
    (a local ``sqlite:///`` store is opened, and migrated, only when a run needs it)."""

    def __init__(self, *, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            try:
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            except Exception as exc:
                raise errors.ServiceUnavailable(
                    service="MLflow", endpoint=self.tracking_uri, detail=f"opening the tracking store: {exc}"
                ) from exc
        return self._client

    def _fail(self, exc: Exception, doing: str) -> errors.RetrainError:
        if isinstance(exc, errors.RetrainError):
            return exc
        if isinstance(exc, MlflowException) and str(exc.error_code) in _NOT_FOUND:
            return errors.PermanentError(f"MLflow at {self.tracking_uri}: {doing}: {errors.truncate(str(exc))}")
        return errors.ServiceUnavailable(service="MLflow", endpoint=self.tracking_uri, detail=f"{doing}: {exc}")

    @staticmethod
    def _missing(exc: Exception) -> bool:
        return isinstance(exc, MlflowException) and str(exc.error_code) in _NOT_FOUND


class MlflowMetrics(_Mlflow):
    """Live metrics and champion metrics from an MLflow server.

    Args:
        tracking_uri: the tracking server (``http://...``) or a local store (``sqlite:///...``).
        registry_uri: the registry, when it differs.
    """

    def live_metric(self, *, experiment: str, metric: str) -> float | None:
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                return None
            runs: Any = self.client.search_runs(
                [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=50
            )
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail(exc, f"reading {metric} in experiment {experiment}") from exc
        for run in runs:
            if metric in run.data.metrics:
                return float(run.data.metrics[metric])
        return None

    def champion_metric(self, *, model: str, metric: str) -> float | None:
        try:
            version = self.client.get_model_version_by_alias(model, constants.CHAMPION_ALIAS)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail(exc, f"reading the champion of {model}") from exc
        tagged = (version.tags or {}).get(f"{constants.TAG_METRIC_PREFIX}{metric}")
        if tagged is not None:
            return float(tagged)
        if not version.run_id:
            return None
        try:
            run = self.client.get_run(version.run_id)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail(exc, f"reading run {version.run_id}") from exc
        value = run.data.metrics.get(metric)
        return float(value) if value is not None else None


class MlflowRegistry(_Mlflow):
    """Moves the champion alias (rollback) and reads version history."""

    def champion(self, model: str) -> str | None:
        """The champion's version, or None."""
        try:
            return str(self.client.get_model_version_by_alias(model, constants.CHAMPION_ALIAS).version)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise self._fail(exc, f"reading the champion of {model}") from exc

    def promoted_versions(self, model: str) -> list[str]:
        """Versions the gate promoted, oldest first."""
        try:
            found = self.client.search_model_versions(
                f"name = '{model}' and tags.`{constants.TAG_GATE_DECISION}` = 'promoted'"
            )
        except Exception as exc:
            raise self._fail(exc, f"listing versions of {model}") from exc
        return [str(v.version) for v in sorted(found, key=lambda v: int(v.version))]

    def move_champion(self, model: str, version: str, *, actor: str, reason: str) -> None:
        """Point ``champion`` at ``version`` and tag the version with who moved it and why."""
        try:
            self.client.get_model_version(model, version)
            self.client.set_registered_model_alias(model, constants.CHAMPION_ALIAS, version)
            self.client.set_model_version_tag(model, version, "retrain.rollback", f"{actor}: {reason}")
        except Exception as exc:
            raise self._fail(exc, f"moving the champion of {model} to v{version}") from exc

    def outcome_of(self, model: str, run_key: str) -> dict[str, Any]:
        """The gate's outcome for the version a run registered (for launchers without an outcome file)."""
        try:
            found = self.client.search_model_versions(
                f"name = '{model}' and tags.`{constants.TAG_RUN_KEY}` = '{run_key}'"
            )
        except Exception as exc:
            raise self._fail(exc, f"finding the version of run {run_key}") from exc
        if not found:
            return {}
        version = max(found, key=lambda v: int(v.version))
        tags = version.tags or {}
        metric = tags.get(f"{constants.TAG_METRIC_PREFIX}map50_95")
        return {
            "model": model,
            "version": str(version.version),
            "decision": tags.get(constants.TAG_GATE_DECISION, "unknown"),
            "reason": tags.get(constants.TAG_GATE_REASON, ""),
            "previous_champion": tags.get("retrain.champion_at_evaluation"),
            "candidate": {"map50_95": float(metric)} if metric is not None else {},
        }
