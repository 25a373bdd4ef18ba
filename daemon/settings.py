"""Settings: one object of nested groups, built once in the CLI and passed down explicitly.

Sources, lowest precedence first:

1. defaults (below, every field documented with its unit): the embedded laptop set-up, a watched folder,
   ``kfp.local``, MLflow on a local SQLite file;
2. a YAML settings file (``--config FILE`` or ``RETRAIN_CONFIG``), the same nesting as the groups below;
3. environment variables ``RETRAIN_<GROUP>__<FIELD>`` (``RETRAIN_KFP__TOKEN``,
   ``RETRAIN_SOURCES__S3__ENDPOINT``): this is how Kubernetes Secrets reach the daemon;
4. CLI flags (``--set kfp.launcher=kfp`` and the named flags of each command).

Secrets are :class:`pydantic.SecretStr`: their repr, ``str`` and JSON dump read ``**********``. Nothing
else in the package reads ``os.environ``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from daemon import constants, errors, yamlfile


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class JournalSettings(_Group):
    """The durable journal of events, decisions and runs."""

    path: Path = Path(".retrain/journal.db")
    """SQLite file of the journal. Must live on a local disk or a ReadWriteOnce volume: SQLite's WAL mode
    does not work on network filesystems (NFS, SMB)."""
    busy_timeout_s: float = Field(default=5.0, gt=0)
    """How long a writer waits for a lock held by another connection, in seconds."""


class S3Settings(_Group):
    """The S3 API (MinIO) that S3 dataset sources list and listen to."""

    endpoint: str | None = None
    """``host:port`` of the S3 API, e.g. ``minio.minio.svc:9000``. Unset: no rule may use ``s3://``."""
    secure: bool = True
    """Use HTTPS to talk to the S3 API."""
    region: str | None = None
    """Region name sent with requests; MinIO ignores it unless configured."""
    access_key: SecretStr | None = None
    """Access key id. Give it through ``RETRAIN_SOURCES__S3__ACCESS_KEY`` (a Kubernetes Secret)."""
    secret_key: SecretStr | None = None
    """Secret access key. Give it through ``RETRAIN_SOURCES__S3__SECRET_KEY`` (a Kubernetes Secret)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to wait for a TCP connection to the S3 API."""
    read_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds to wait for data on an open connection (the listen stream sends keep-alives)."""


class SourcesSettings(_Group):
    """Where events come from and how often storage is reconciled with the journal."""

    s3: S3Settings = S3Settings()
    reconcile_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between two reconcile passes (list the bucket prefix, rescan the folder) per dataset."""
    minio_listen: bool = False
    """Stream MinIO bucket notifications with the listen API (MinIO only; lossy, paired with reconcile)."""
    webhook_token: SecretStr | None = None
    """Bearer token MinIO's webhook target must send to ``POST /events/minio``. Unset: webhook disabled."""
    webhook_max_body_bytes: int = Field(default=1_048_576, gt=0)
    """Largest webhook body accepted, in bytes; larger bodies get 413."""
    folder_polling: bool = False
    """Watch folders by polling instead of inotify: needed on NFS/SMB-backed volumes, which send no
    inotify events."""
    folder_poll_interval_s: float = Field(default=5.0, gt=0)
    """Seconds between two polls when ``folder_polling`` is on."""
    folder_rescan_interval_s: float = Field(default=600.0, gt=0)
    """Seconds between two full rescans of a watched folder (recovers events inotify dropped)."""


class KfpSettings(_Group):
    """The launcher: Kubeflow Pipelines on a cluster, or ``kfp.local`` on this machine."""

    launcher: Literal["local", "kfp"] = "local"
    """``local`` runs pipelines with ``kfp.local`` in a child process; ``kfp`` submits to a KFP API."""
    host: str | None = None
    """KFP API URL, e.g. ``http://ml-pipeline.kubeflow.svc:8888``. Required with ``launcher: kfp``."""
    namespace: str = "kubeflow"
    """Kubernetes namespace (KFP profile) runs are created in."""
    token: SecretStr | None = None
    """Bearer token for the KFP API. Unset with ``use_service_account_token``: the pod's token is used."""
    use_service_account_token: bool = False
    """Authenticate with the projected service-account token of the daemon's pod."""
    poll_interval_s: float = Field(default=30.0, gt=0)
    """Seconds between two polls of a run's state."""
    run_timeout_s: float = Field(default=86_400.0, gt=0)
    """A run still not finished after this many seconds is reported as timed out (it is not killed)."""
    local_pipeline_root: Path = Path(".retrain/kfp")
    """Folder where ``kfp.local`` keeps pipeline outputs, one sub-folder per run."""
    local_max_concurrent_runs: int = Field(default=1, ge=1)
    """Local runs at a time; one suits a 2-core laptop."""
    trainer_image: str = "ghcr.io/retrain-daemon/trainer:0.1.0"
    """Container image the pipeline components run in (see the Dockerfile's ``trainer`` target)."""


class PipelineSettings(_Group):
    """How pipeline tasks run on the cluster (ignored by ``kfp.local``, checked in the compiled spec)."""

    accelerator_type: str = "nvidia.com/gpu"
    """Kubernetes resource name of the GPU given to training, tuning and evaluation tasks."""
    cpu_request: str = "2"
    """CPU request of a GPU task (Kubernetes quantity)."""
    memory_limit: str = "16Gi"
    """Memory limit of a GPU task (an integer Kubernetes quantity, e.g. 16Gi)."""
    shm_size: str = "2Gi"
    """Size of the memory-backed /dev/shm emptyDir: PyTorch DataLoader workers need more than the
    container default of 64Mi ("Bus error ... out of shared memory"); never privileged or hostIPC."""
    dataset_pvc: str | None = None
    """PersistentVolumeClaim holding file:// datasets, mounted read-only into the data tasks."""
    dataset_mount_path: str = "/data"
    """Where the dataset PVC is mounted (file:///data/... in rules refers to it)."""
    s3_secret: str | None = "retrain-s3"  # noqa: S105 - the name of a Secret, not a secret
    """Kubernetes Secret with keys access_key and secret_key, given to tasks as AWS_* variables."""
    mlflow_secret: str | None = None
    """Kubernetes Secret with key token, given to tasks as MLFLOW_TRACKING_TOKEN."""
    retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed task (node lost, image pull, transient errors)."""
    retry_backoff_s: int = Field(default=30, ge=1)
    """First wait before a retry, in seconds; doubles up to retry_backoff_max_s."""
    retry_backoff_max_s: int = Field(default=600, ge=1)
    """Longest wait between retries, in seconds."""
    task_timeout_s: int = Field(default=86_400, ge=60)
    """A task running longer than this many seconds is stopped by Kubernetes."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels GPU tasks must run on, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}."""
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    """Taints GPU tasks tolerate (key, operator, value, effect)."""
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Share of images held out for validation when a dataset has no train/val folders."""
    max_bad_fraction: float = Field(default=0.05, ge=0, le=1)
    """Validation fails the run when more than this share of items is bad (otherwise they are excluded)."""


class MlflowSettings(_Group):
    """The MLflow tracking server and model registry."""

    tracking_uri: str = "sqlite:///.retrain/mlflow.db"
    """Tracking URI, e.g. ``http://mlflow.mlflow.svc:5000``. The default is a local SQLite file."""
    registry_uri: str | None = None
    """Model registry URI when it differs from the tracking URI."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Timeout of one request to the MLflow server, in seconds."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a failed request to the MLflow server (each after 1, 2, 4... seconds)."""


class HttpSettings(_Group):
    """The daemon's HTTP endpoints: health, readiness, metrics, webhook, JSON API."""

    enabled: bool = True
    """Serve HTTP at all. Off: no probes, metrics, API or webhook (``retrain up`` on a laptop can do without)."""
    host: str = "127.0.0.1"
    """Address to listen on. ``0.0.0.0`` in a pod."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port to listen on; 0 picks a free one (logged as ``http_listening``)."""
    api_token: SecretStr | None = None
    """Bearer token for the mutating API endpoints (manual trigger, rollback). Unset: those answer 403.
    Give it through ``RETRAIN_HTTP__API_TOKEN`` (a Kubernetes Secret)."""
    liveness_timeout_s: float = Field(default=120.0, gt=0)
    """``/healthz`` fails when the loop has not completed a pass for this many seconds."""


class LoggingSettings(_Group):
    """Structured logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level that is written."""
    format: Literal["auto", "json", "console"] = "auto"
    """``json`` lines, readable ``console`` output, or ``auto``: console on a terminal, JSON otherwise."""


class ShutdownSettings(_Group):
    """What SIGTERM/SIGINT do."""

    timeout_s: float = Field(default=30.0, gt=0)
    """Seconds to drain after a stop signal before work is cancelled and the process exits."""


class RulesSettings(_Group):
    """Where the rule files are."""

    path: Path = Path("rules")
    """Folder of ``*.yaml`` rule files, watched and hot-reloaded (a mounted ConfigMap in a pod)."""


class Settings(_Group):
    """Everything the daemon can be configured with."""

    journal: JournalSettings = JournalSettings()
    sources: SourcesSettings = SourcesSettings()
    kfp: KfpSettings = KfpSettings()
    mlflow: MlflowSettings = MlflowSettings()
    pipeline: PipelineSettings = PipelineSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    rules: RulesSettings = RulesSettings()


# --- building -----------------------------------------------------------------------------------------

#: Where a value came from, by dotted field path: a file position, an env var or a flag.
_Origins = dict[str, str]


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _walk_leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk_leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key))


def _from_file(path: Path, origins: _Origins) -> dict[str, Any]:
    documents = yamlfile.load_file(path)
    if not documents:
        return {}
    if len(documents) > 1:
        raise errors.ConfigError("a settings file holds one YAML document", file=path)
    document = documents[0]
    if not isinstance(document.value, dict):
        raise errors.ConfigError("a settings file must be a mapping of groups", file=path, line=1)
    for leaf in _walk_leaves(document.value):
        origins[".".join(leaf)] = f"{path}:{document.line_of(leaf)}"
    return document.value


def _from_environ(environ: Mapping[str, str], origins: _Origins) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(constants.ENV_PREFIX) or name in (constants.ENV_CONFIG_FILE, constants.ENV_FAILPOINT):
            continue
        path = name[len(constants.ENV_PREFIX) :].lower().split(constants.ENV_NESTED_DELIMITER)
        _set_path(tree, path, value)
        origins[".".join(path)] = f"environment variable {name}"
    return tree


def _from_overrides(overrides: Iterable[str], origins: _Origins) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigError(f"--set expects KEY=VALUE, e.g. kfp.launcher=kfp; got {item!r}")
        path = key.strip().split(".")
        _set_path(tree, path, value)
        origins[".".join(path)] = f"--set {key.strip()}"
    return tree


def _known_fields(model: type[BaseModel], path: list[str]) -> list[str]:
    """The valid field names at ``path`` inside ``model`` (for "did you mean" suggestions)."""
    current: type[BaseModel] = model
    for part in path:
        field = current.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(current.model_fields)


def _translate(exc: pydantic.ValidationError, origins: _Origins) -> errors.ConfigErrors:
    found = []
    for item in exc.errors():
        path = [str(p) for p in item["loc"]]
        dotted = ".".join(path)
        origin = origins.get(dotted, "defaults")
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(path[-1], _known_fields(Settings, path[:-1]), n=1)
            message = "unknown setting" + (f"; did you mean {close[0]!r}?" if close else "")
        file, _, line = origin.rpartition(":")
        if file and line.isdigit():
            found.append(errors.ConfigError(message, file=file, line=int(line), field=dotted))
        else:
            found.append(errors.ConfigError(f"{message} (from {origin})", field=dotted))
    return errors.ConfigErrors(found)


def load(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Build the settings from defaults, a file, the environment and CLI overrides.

    Args:
        config_file: a YAML settings file; ``None`` uses ``RETRAIN_CONFIG`` from ``environ`` if set.
        environ: the process environment (the CLI passes ``os.environ``; tests pass a dict).
        overrides: ``KEY=VALUE`` strings with dotted keys, from ``--set`` and named flags.

    Returns:
        The validated, frozen settings.

    Raises:
        errors.ConfigErrors: every problem found, each naming where the bad value came from.
    """
    environ = environ if environ is not None else {}
    origins: _Origins = {}
    if config_file is None and environ.get(constants.ENV_CONFIG_FILE):
        config_file = Path(environ[constants.ENV_CONFIG_FILE])
    try:
        tree: dict[str, Any] = {}
        if config_file is not None:
            tree = _merge(tree, _from_file(config_file, origins))
        tree = _merge(tree, _from_environ(environ, origins))
        tree = _merge(tree, _from_overrides(overrides, origins))
    except errors.ConfigError as exc:
        raise errors.ConfigErrors([exc]) from exc
    try:
        return Settings.model_validate(tree)
    except pydantic.ValidationError as exc:
        raise _translate(exc, origins) from exc


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for display: secrets appear as ``**********``, paths as strings."""
    return settings.model_dump(mode="json")
