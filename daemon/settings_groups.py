"""The groups of the daemon's settings (:class:`daemon.settings.Settings` nests one of each): every field with
its default, its unit and what it does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class JournalSettings(_Group):
    """The durable journal of events, decisions and runs."""

    path: Path = Path(".retrain/journal.db")
    """SQLite file of the journal. Must live on a local disk or a ReadWriteOnce volume: SQLite's WAL mode
    does not work on network filesystems (NFS, SMB)."""
    busy_timeout_s: float = Field(default=5.0, gt=0)
    """How long a writer waits for a lock held by another connection, in seconds."""
    min_free_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    """Free space the journal's volume must keep, in bytes: below it ``/readyz`` reports the journal as not
    writable (a full disk would refuse the next event)."""
    retention_days: float = Field(default=30.0, gt=0)
    """History older than this many days is pruned once nothing needs it: events (each present file's current
    one is kept), skip decisions (each rule keeps its newest 200 and every launch), answered signals and
    finished notices. The inventory, runs, snapshots and promotions are kept."""
    prune_interval_s: float = Field(default=3600.0, gt=0)
    """Seconds between two retention sweeps."""
    url: SecretStr | None = None
    """A PostgreSQL journal instead of the SQLite file: ``postgresql://USER@HOST:PORT/DB`` (libpq's URL or
    ``key=value`` string). Replicas sharing it elect one leader (``leader``). Give it through
    ``RETRAIN_JOURNAL__URL`` from a Secret when it holds the password; messages never show the password."""
    password: SecretStr | None = None
    """The PostgreSQL password when the URL has none (``RETRAIN_JOURNAL__PASSWORD``; libpq's ``PGPASSWORD``
    works too)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds for a PostgreSQL connection to be set up (a server that accepts and never answers)."""
    statement_timeout_s: float = Field(default=60.0, gt=0)
    """PostgreSQL cancels a journal statement that runs longer, in seconds."""
    idle_in_transaction_timeout_s: float = Field(default=10.0, gt=0)
    """PostgreSQL ends a session idle inside a transaction this long (a paused replica cannot hold the
    writers' lock for longer), in seconds."""


class LeaderSettings(_Group):
    """One leader among replicas that share a PostgreSQL journal (``journal.url``); unused with SQLite."""

    ttl_s: float = Field(default=15.0, gt=0)
    """How long the leader's lease lasts unrenewed, in seconds: a standby takes over this long after the
    leader last renewed it (a clean stop gives it up at once)."""
    renew_interval_s: float = Field(default=5.0, gt=0)
    """Seconds between two renewals; must be well within the TTL (at most a third of it)."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """Seconds between a standby's tries to take the lease."""
    holder: str | None = None
    """This replica's name in the lease; unset: the pod's name (``HOSTNAME``) with the process id."""

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> LeaderSettings:
        if self.renew_interval_s * 3 > self.ttl_s:
            raise ValueError(
                f"renew_interval_s ({self.renew_interval_s}) must be at most a third of ttl_s ({self.ttl_s}): a "
                "lease renewed that late lapses on one slow renewal"
            )
        return self


class S3Settings(_Group):
    """The S3 API (MinIO) that S3 dataset sources list and listen to."""

    endpoint: str | None = None
    """``host:port`` of the S3 API, e.g. ``minio.minio.svc:9000``; a URL (``http://host:port``) is accepted and
    normalised to ``host:port``, its scheme setting ``secure``. Unset: no rule may use ``s3://``."""
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

    @model_validator(mode="before")
    @classmethod
    def _endpoint_url(cls, data: object) -> object:
        """An ``http(s)://host:port`` endpoint is taken as ``host:port`` with ``secure`` from its scheme (a
        ``secure`` that says otherwise is an error); what is left is checked by :meth:`_endpoint`."""
        if not isinstance(data, dict) or not isinstance(data.get("endpoint"), str):
            return data
        text = data["endpoint"].strip()
        scheme, separator, rest = text.partition("://")
        if not separator or scheme.lower() not in ("http", "https"):
            return dict(data, endpoint=text)
        secure = scheme.lower() == "https"
        if "secure" in data and str(data["secure"]).strip().lower() not in (str(secure).lower(), str(int(secure))):
            raise ValueError(f"sources.s3.endpoint is an {scheme} URL but sources.s3.secure is {data['secure']}")
        return dict(data, endpoint=rest.rstrip("/"), secure=secure)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        """``host:port`` as minio-py wants it; a clear error for one that can never work (it would otherwise be
        minio-py's ValueError when the daemon starts)."""
        if value is None:
            return None
        if "@" in value:  # never echoed: it holds a password
            raise ValueError("credentials do not belong in the endpoint: give sources.s3.access_key and secret_key")
        if "://" in value:
            raise ValueError(f"{value!r}: the S3 API is reached over http or https (or give host:port)")
        host_port, _, path = value.partition("/")
        if path:
            raise ValueError(f"{value!r}: host:port only, a path (/{path}) is not part of it")
        host, colon, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
        if not host or any(c.isspace() for c in host_port):
            raise ValueError(f"{value!r}: expected host:port, e.g. minio.minio.svc:9000")
        if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{value!r}: port {port!r} is not a number from 1 to 65535")
        return host_port


class SourcesSettings(_Group):
    """Where events come from and how often storage is reconciled with the journal."""

    s3: S3Settings = S3Settings()
    reconcile_interval_s: float = Field(default=300.0, gt=0)
    """Seconds between two reconcile passes (list the bucket prefix, rescan the folder) per dataset."""
    reconcile_shard_objects: int = Field(default=250_000, ge=0)
    """Objects one S3 reconcile pass lists at most (250,000 are ~12 s of listing at 20,000 keys/s): a larger
    prefix is reconciled in shards, one pass each, the next after a pause of a few times the pass; 0 lists the
    whole prefix in one pass."""
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
    unwatched_retry_s: float = Field(default=30.0, gt=0)
    """Seconds between two attempts to watch a dataset that cannot be watched yet (a folder whose volume is
    not mounted, an S3 dataset without an endpoint): reported meanwhile by ``/readyz`` and the status."""


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
    request_timeout_s: float = Field(default=30.0, gt=0)
    """Timeout of one request to the KFP API, in seconds (connect and read)."""
    inputs_uri: str | None = None
    """Where the daemon puts each run's inputs (the snapshot manifest) for the run's pods to read, by content
    hash: ``s3://bucket/prefix/`` (written with the ``sources.s3`` credentials). Required with launcher
    ``kfp``: a pipeline pod cannot read the daemon's disk. Unset with the local launcher: the run's folder."""
    pending_timeout_s: float = Field(default=900.0, gt=0)
    """A run (or a task of it) waiting this many seconds to start (its pod Pending: a missing Secret or image, a
    quota, no free GPU) is reported: in ``retrain status``, the dashboard, the ``retrain_runs_waiting`` metric
    and a notification. It is not cancelled: the cluster may still start it."""
    run_timeout_s: float = Field(default=86_400.0, gt=0)
    """A run still not finished after this many seconds is reported as timed out (it is not killed)."""
    local_pipeline_root: Path = Path(".retrain/kfp")
    """Folder where ``kfp.local`` keeps pipeline outputs, one sub-folder per run."""
    local_max_concurrent_runs: int = Field(default=1, ge=1)
    """Local runs at a time; one suits a 2-core laptop."""
    trainer_image: str = "ghcr.io/retrain-daemon/trainer:0.1.0"
    """Container image the pipeline components run in (see the Dockerfile's ``trainer`` target)."""
    min_backend_version: str = Field(default="2.14.0", pattern=r"^\d+\.\d+\.\d+$")
    """The oldest KFP backend release the compiled pipelines run on (``dsl.Collected`` fan-in of the tuning
    trials and retries inside their ``ParallelFor`` came in 2.14.0). The launcher reads the backend's release
    from its healthz endpoint and refuses to submit to an older one, naming the features it lacks."""
    run_retries: int = Field(default=1, ge=0, le=5)
    """Times a KFP run that failed is retried through KFP's retry API (``runs/ID:retry``: its failed tasks run
    again, succeeded ones are kept). Argo retries a task whose container failed (``pipeline.retries``) but, as
    KFP compiles retries (no ``retryPolicy``: Argo's ``OnFailure``), not a pod lost with its node."""


class PipelineSettings(_Group):
    """How pipeline tasks run on the cluster (ignored by ``kfp.local``, checked in the compiled spec)."""

    accelerator_type: str = "nvidia.com/gpu"
    """Kubernetes resource name of the GPU given to training, tuning and evaluation tasks."""
    cpu_request: str = "2"
    """CPU request of a training, trial or evaluation task (Kubernetes quantity)."""
    memory_request: str = "8Gi"
    """Memory request of a training, trial or evaluation task: a namespace with a ResourceQuota (every
    Kubeflow profile has one) refuses pods without cpu and memory requests."""
    memory_limit: str = "16Gi"
    """Memory limit of a training, trial or evaluation task (an integer Kubernetes quantity, e.g. 16Gi)."""
    light_cpu_request: str = "500m"
    """CPU request of the light tasks: accelerator check, dataset preparation, trial sampling, pick-best."""
    light_memory_request: str = "1Gi"
    """Memory request of the light tasks."""
    light_memory_limit: str = "4Gi"
    """Memory limit of the light tasks (dataset preparation validates images one at a time)."""
    workers: int | None = Field(default=None, ge=0, le=64)
    """DataLoader worker processes of training and evaluation (unset: ``cpu_request`` minus one for the main
    process, at most 8)."""
    plots: bool = True
    """Ultralytics' training plots (PR and F1 curves, confusion matrix, results), logged to MLflow under
    ``plots/`` with ``results.csv``."""
    deterministic: bool = True
    """Deterministic training: the same data and seed give the same weights (on a GPU this costs speed; set
    false where throughput matters more than reproducibility)."""
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
    """Retries of a task whose container failed (Argo's ``OnFailure``: an exit code other than 0, a transient
    S3 or MLflow error). A pod lost with its node is not retried by Argo as KFP compiles retries; the daemon
    retries such a run instead (``kfp.run_retries``)."""
    retry_backoff_s: int = Field(default=30, ge=1)
    """First wait before a retry, in seconds; doubles at each further retry."""
    retry_window_s: int | None = Field(default=None, ge=1)
    """Argo's ``backoff.maxDuration``, in seconds: the whole window, from a task's first start, in which it may
    be retried (a retried pod is also stopped at its end). Unset: long enough for every attempt to run for
    ``task_timeout_s`` plus the waits between them, so a task that fails after hours is still retried."""
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
    max_background_fraction: float = Field(default=0.5, ge=0, le=1)
    """Validation fails the run when more than this share of images has no label file (an image without one
    is a background, trained on as an image without objects; many at once mean labels were not uploaded)."""

    def retry_window(self) -> int:
        """``retry_window_s``, else every attempt's ``task_timeout_s`` and the backoff waits between them."""
        if self.retry_window_s is not None:
            return self.retry_window_s
        waits: int = sum(self.retry_backoff_s * 2**attempt for attempt in range(self.retries))
        return (self.retries + 1) * self.task_timeout_s + waits

    def trainer_options(self) -> dict[str, object]:
        """What the training and evaluation steps get (``pipelines.steps.training.TrainerOptions``)."""
        return {"workers": self.dataloader_workers(), "plots": self.plots, "deterministic": self.deterministic}

    def dataloader_workers(self) -> int:
        """``workers``, else the task's CPU request minus one (the main process), between 0 and 8."""
        if self.workers is not None:
            return self.workers
        quantity = self.cpu_request.strip()
        try:
            cpus = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
        except ValueError:
            return 0
        return max(0, min(8, int(cpus) - 1))


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
    ui_url: str | None = None
    """The MLflow UI as people open it (e.g. ``https://mlflow.example.com``): the dashboard links runs there."""


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


#: An environment variable's name, as notification targets are given.
_VARIABLE = r"^[A-Za-z_][A-Za-z0-9_]*$"
NoticeEvent = Literal[
    "promoted", "rejected", "refused", "failed", "abandoned", "waiting", "source_down", "rule_rejected"
]


class NotifySettings(_Group):
    """Who is told of promotions, rejections, failed or abandoned runs, runs waiting too long to start, sources
    that stay down and refused rule files (delivered with Apprise from the journal's outbox, with retries)."""

    targets: list[Annotated[str, Field(pattern=_VARIABLE)]] = []
    """Names of environment variables, each holding one Apprise URL (``slack://...``, ``msteams://...``,
    ``mailtos://...``, ``json://host/path`` for a generic webhook): the URLs, and the tokens in them, never sit
    in a settings or rule file. Rules add their own with ``notify:``."""
    events: list[NoticeEvent] = [
        "promoted",
        "rejected",
        "refused",
        "failed",
        "abandoned",
        "waiting",
        "source_down",
        "rule_rejected",
    ]
    """What is told."""
    source_down_after_s: float = Field(default=600.0, gt=0)
    """A source disconnected this long (seconds) is told, once per disconnection."""
    retry_initial_s: float = Field(default=10.0, gt=0)
    """Seconds before the second attempt at a target that failed; doubled each attempt."""
    retry_max_s: float = Field(default=3600.0, gt=0)
    """The longest wait between two attempts, in seconds."""
    max_attempts: int = Field(default=10, ge=1)
    """Attempts per notice before it is given up (logged, and kept in the journal with its last error)."""
