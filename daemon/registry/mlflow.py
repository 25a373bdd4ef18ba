"""MLflow adapter: the one place the daemon (and the pipeline's promote step) talks to MLflow.

One error policy for every call, from MLflow's own error codes (``MlflowException.error_code``):

- ``RESOURCE_DOES_NOT_EXIST`` / ``NOT_FOUND``: :class:`~daemon.errors.NotFound`;
- ``INVALID_PARAMETER_VALUE``, ``BAD_REQUEST``, ``INVALID_STATE``, ``RESOURCE_ALREADY_EXISTS``:
  :class:`~daemon.errors.InvalidRequest` (asking again gives the same answer) -- except when reading an
  alias, where MLflow answers a missing alias with ``INVALID_PARAMETER_VALUE``: that is "no champion";
- ``UNAUTHENTICATED``, ``PERMISSION_DENIED``, ``CUSTOMER_UNAUTHORIZED``: :class:`~daemon.errors.Unauthorized`;
- everything else (``INTERNAL_ERROR`` -- which is also what a connection failure or a timeout becomes --,
  ``TEMPORARILY_UNAVAILABLE``, ``REQUEST_LIMIT_EXCEEDED``, a local store's database error):
  :class:`~daemon.errors.ServiceUnavailable`, retried by the caller.

Names never reach a filter string unchecked: model names and run keys are validated against MLflow's
name characters before they are quoted into ``search_model_versions`` filters.

MLflow is imported on first use, not when the daemon starts (its import costs tens of megabytes), and its
HTTP retries and timeout are set once by :func:`configure`.

A local ``sqlite:///`` store (the laptop default) is created whole or not at all (:func:`prepare_local_store`):
MLflow creates and migrates a new store in dozens of steps, and a process killed among them left a file
that no later open accepted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from daemon import errors, redaction, settings
from daemon.model import outcomes, tags

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

T = TypeVar("T")

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
_INVALID = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "RESOURCE_ALREADY_EXISTS"})
_UNAUTHORIZED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"})
#: What may stand inside a quoted filter value: MLflow model names and the daemon's run keys.
_FILTER_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
_SQLITE = "sqlite:///"
#: A store being created is built under this name beside the store; one left by a killed process is removed
#: once it is this old (no creation takes that long).
_SCRATCH = ".{name}.creating-"
_SCRATCH_STALE_S = 600.0
#: What a SQLite store that was left half-created answers when opened.
_HALF_CREATED = re.compile(r"table \w+ already exists")


def configure(config: settings.MlflowSettings) -> None:
    """Apply the request policy. MLflow reads its HTTP retries and timeout from the environment only
    (its default of 7 retries with exponential backoff holds a call for minutes on an unreachable
    server), so the daemon sets them once at start-up, before the first request."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(config.max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(config.request_timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"


def local_store(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for a server, or an in-memory database)."""
    if not tracking_uri.startswith(_SQLITE):
        return None
    path = tracking_uri[len(_SQLITE) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


#: What MLflow's database stores (``sqlite:///``, ``postgresql://``, ``mysql://``, ``mssql://``) import beyond
#: ``mlflow-skinny``, the daemon image's MLflow: the REST client of an MLflow server.
_STORE_MODULES = ("sqlalchemy", "alembic")
_DATABASE_SCHEMES = re.compile(r"^(sqlite|postgresql|mysql|mssql)(\+\w+)?:", re.IGNORECASE)


def require_store_support(uri: str, *, field: str) -> None:
    """Refuse a database store where only ``mlflow-skinny`` is installed (the daemon image), naming the
    setting and both remedies, instead of failing at the first run or drift check. Imports nothing."""
    if not _DATABASE_SCHEMES.match(uri):
        return
    missing = [name for name in _STORE_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise errors.ConfigError(
            f"{redaction.redact(uri)} is a database store, which needs the full MLflow package "
            f"({', '.join(missing)} missing: this install has mlflow-skinny, the REST client only); "
            "set it to an MLflow server's URL (http://...) or install retrain-daemon[local]",
            field=field,
        )


def prepare_local_store(tracking_uri: str, *, field: str = "mlflow.tracking_uri") -> None:
    """Create a missing ``sqlite:///`` store atomically: MLflow builds it in a scratch file beside it, which is
    then hard-linked to the store's name (a link, unlike a rename, never replaces a store that another
    process created meanwhile). A process killed at any moment leaves no store, or a complete one."""
    path = local_store(tracking_uri)
    if path is None or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _SCRATCH.format(name=path.name)
    for stale in path.parent.glob(f"{prefix}*"):
        try:
            if time.time() - stale.stat().st_mtime > _SCRATCH_STALE_S:
                stale.unlink()
        except OSError:
            continue  # another process removed it
    scratch = path.with_name(f"{prefix}{os.getpid()}-{threading.get_ident()}")
    leftovers = [scratch, scratch.with_name(f"{scratch.name}-journal")]
    for file in leftovers:
        file.unlink(missing_ok=True)
    require_store_support(tracking_uri, field=field)
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        # The artifact root MLflow's client gives a local store ("./mlruns", from where the process runs).
        store = SqlAlchemyStore(f"{_SQLITE}{scratch.absolute()}", "./mlruns")  # type: ignore[no-untyped-call]
        store.engine.dispose()
        descriptor = os.open(scratch, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(scratch, path)
        except FileExistsError:
            return  # another process created it first: one complete store is as good as another
        except OSError:  # a file system without hard links (some network and removable ones): rename instead
            if path.exists():
                return
            os.replace(scratch, path)
        descriptor = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    finally:
        for file in leftovers:
            file.unlink(missing_ok=True)


def use_globally(tracking_uri: str) -> None:
    """Point MLflow's module-level API (``mlflow.start_run``, ``register_model``, artifact downloads) at
    ``tracking_uri``, creating a local store first as :func:`prepare_local_store` does."""
    import mlflow

    prepare_local_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)


def quoted(value: str, *, what: str) -> str:
    """``value`` as a quoted MLflow filter literal; refuses anything that is not a plain name."""
    if not _FILTER_SAFE.match(value):
        raise errors.InvalidRequest(f"{value!r} is not a valid {what} (letters, digits, '.', '_', '-')")
    return f"'{value}'"


def translate(exc: Exception, *, endpoint: str, doing: str) -> errors.RetrainError:
    """The daemon's error for anything MLflow (or its store) raised."""
    if isinstance(exc, errors.RetrainError):
        return exc
    code = str(getattr(exc, "error_code", "") or "")
    detail = f"{doing}: {errors.truncate(str(exc))}"
    where = redaction.redact(endpoint)
    store = local_store(endpoint)
    if store is not None and _HALF_CREATED.search(str(exc)):
        detail = (  # the endpoint names the file
            f"{doing}: the store is half-created (a process was killed while MLflow built it); it holds no "
            f"runs: move it aside and restart ({str(exc).splitlines()[0]})"
        )
    if code in _NOT_FOUND:
        return errors.NotFound(f"MLflow at {where}: {detail}")
    if code in _INVALID:
        return errors.InvalidRequest(f"MLflow at {where} refused {detail}")
    if code in _UNAUTHORIZED:
        return errors.Unauthorized(f"MLflow at {where} refused the credentials: {detail}")
    return errors.ServiceUnavailable(service="MLflow", endpoint=where, detail=detail)


#: The per-epoch validation metrics the training step logs (Ultralytics' names, without parentheses).
EPOCH_MAP50_95 = "metrics/mAP50-95B"
EPOCH_MAP50 = "metrics/mAP50B"


@dataclass(frozen=True, kw_only=True)
class TrainingCurve:
    """A training's MLflow run and its validation mAP per epoch so far."""

    run_id: str
    epochs: int | None
    points: list[tuple[int, float, float | None]]
    """(epoch, mAP50-95, mAP50), in the order MLflow returned them."""


@dataclass(frozen=True, kw_only=True)
class Champion:
    """The version the ``champion`` alias points at."""

    model: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)


class Mlflow:
    """An MLflow client opened on first use: the daemon starts, and keeps running, whatever state MLflow is in
    (a local ``sqlite:///`` store is opened, and migrated, only when something needs it).

    Args:
        tracking_uri: the tracking server (``http://...``) or a local store (``sqlite:///...``).
        registry_uri: the registry, when it differs.
    """

    def __init__(self, *, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            with self.calling("opening the tracking store"):
                from mlflow.tracking import MlflowClient

                prepare_local_store(self.tracking_uri)
                if self.registry_uri is not None:
                    prepare_local_store(self.registry_uri, field="mlflow.registry_uri")

                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client

    @contextmanager
    def calling(self, doing: str) -> Iterator[None]:
        """Translate whatever MLflow raises inside the block (the one error policy, see the module)."""
        try:
            yield
        except errors.RetrainError:
            raise
        except Exception as exc:  # MlflowException, requests' and SQLAlchemy's errors: all mapped by translate
            raise translate(exc, endpoint=self.tracking_uri, doing=doing) from exc

    def call(self, doing: str, function: Callable[[], T]) -> T:
        with self.calling(doing):
            return function()

    # --- reading ----------------------------------------------------------------------------------
    def champion(self, model: str) -> Champion | None:
        """The version the ``champion`` alias points at; None when the model has no champion (or no such
        model exists). The one champion reader of the daemon and the pipeline."""
        try:
            with self.calling(f"reading the champion of {model}"):
                found = self.client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS)
        except errors.NotFound:
            return None
        except errors.InvalidRequest as exc:
            if "alias" in str(exc).lower():  # MLflow's answer for "this model has no such alias"
                return None
            raise
        return Champion(
            model=model, version=str(found.version), run_id=found.run_id or None, tags=dict(found.tags or {})
        )

    def model_exists(self, model: str) -> bool:
        try:
            self.call(f"reading model {model}", lambda: self.client.get_registered_model(model))
        except errors.NotFound:
            return False
        return True

    def versions(self, model: str, **tagged: str) -> list[Any]:
        """Versions of ``model`` carrying every given tag value, oldest first."""
        clauses = [f"name = {quoted(model, what='model name')}"]
        clauses += [f"tags.`{key}` = {quoted(value, what=key)}" for key, value in tagged.items()]
        found = self.call(
            f"listing versions of {model}", lambda: self.client.search_model_versions(" and ".join(clauses))
        )
        return sorted(found, key=lambda v: int(v.version))

    def live_metric(self, *, experiment: str, metric: str) -> float | None:
        """The latest value of ``metric`` logged in ``experiment`` (by a monitor), if any."""

        def read() -> Any:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                return []
            return self.client.search_runs(
                [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=50
            )

        try:
            runs = self.call(f"reading {metric} in experiment {experiment}", read)
        except errors.NotFound:
            return None
        for run in runs:
            if metric in run.data.metrics:
                return float(run.data.metrics[metric])
        return None

    def training_curve(self, *, experiment: str, run_key: str) -> TrainingCurve | None:
        """The per-epoch validation mAP of the training of ``run_key`` (its MLflow run, found by the run-key tag
        in ``experiment``), as logged so far; None while no such run exists."""

        def read() -> TrainingCurve | None:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                return None
            clause = f"tags.`{tags.RUN_KEY}` = {quoted(run_key, what='run key')}"
            matches = self.client.search_runs(
                [found.experiment_id], filter_string=clause, order_by=["attributes.start_time DESC"], max_results=1
            )
            if not matches:
                return None
            run = matches[0]
            history = {
                name: {m.step: float(m.value) for m in self.client.get_metric_history(run.info.run_id, name)}
                for name in (EPOCH_MAP50_95, EPOCH_MAP50)
            }
            epochs = run.data.params.get("epochs")
            return TrainingCurve(
                run_id=run.info.run_id,
                epochs=int(epochs) if epochs is not None and epochs.isdigit() else None,
                points=[
                    (step, value, history[EPOCH_MAP50].get(step)) for step, value in history[EPOCH_MAP50_95].items()
                ],
            )

        return self.call(f"reading the training curve of {run_key}", read)

    def champion_metric(self, *, model: str, metric: str) -> float | None:
        """The champion's validation value of ``metric`` (its version tag, else its run's metric)."""
        champion = self.champion(model)
        if champion is None:
            return None
        tagged = champion.tags.get(f"{tags.METRIC_PREFIX}{metric}")
        if tagged is not None:
            return float(tagged)
        run_id = champion.run_id
        if run_id is None:
            return None
        try:
            run = self.call(f"reading run {run_id}", lambda: self.client.get_run(run_id))
        except errors.NotFound:
            return None
        value = run.data.metrics.get(metric)
        return float(value) if value is not None else None

    def promoted_versions(self, model: str) -> list[str]:
        """Versions the gate promoted, oldest first."""
        return [str(v.version) for v in self.versions(model, **{tags.GATE_DECISION: "promoted"})]

    def registered_by(self, model: str, run_key: str) -> tuple[str, dict[str, str]] | None:
        """The version a run registered and its tags (None: it registered none)."""
        found = self.versions(model, **{tags.RUN_KEY: run_key})
        if not found:
            return None
        return str(found[-1].version), dict(found[-1].tags or {})

    # --- writing ----------------------------------------------------------------------------------
    def move_champion(self, model: str, version: str, *, actor: str, reason: str) -> None:
        """Point ``champion`` at ``version`` and tag the version with who moved it and why.

        Raises:
            errors.NotFound: no such model or version.
        """
        with self.calling(f"moving the champion of {model} to v{version}"):
            self.client.get_model_version(model, version)
            self.client.set_registered_model_alias(model, tags.CHAMPION_ALIAS, version)
            self.client.set_model_version_tag(model, version, tags.ROLLBACK, f"{actor}: {reason}")


def evaluation_from_tags(found: Mapping[str, str]) -> outcomes.Evaluation | None:
    """The candidate's metrics as the gate tagged them on its version (None: not evaluated)."""
    metric = found.get(f"{tags.METRIC_PREFIX}map50_95")
    if metric is None:
        return None
    return outcomes.Evaluation(map50_95=float(metric), map50=float(found.get(f"{tags.METRIC_PREFIX}map50") or 0.0))


def champion_at_evaluation(found: Mapping[str, str]) -> str | None:
    """The champion the version was compared with (None: there was none, or no evaluation)."""
    previous = found.get(tags.CHAMPION_AT_EVALUATION)
    return None if previous in (None, "", "none") else previous


def outcome_from_tags(model: str, version: str, found: Mapping[str, str]) -> outcomes.GateOutcome | None:
    """The gate's outcome written on a model version (None when the gate never tagged it)."""
    decision = found.get(tags.GATE_DECISION)
    if decision is None:
        return None
    return outcomes.GateOutcome(
        model=model,
        version=str(version),
        decision=outcomes.GateDecision(decision),
        reason=found.get(tags.GATE_REASON, ""),
        previous_champion=champion_at_evaluation(found),
        candidate=evaluation_from_tags(found),
    )
