"""Wiring: the daemon's parts, built once from the settings.

Every part gets what it uses, explicitly: the journal, the status board and the event sink the sources
deliver to, the rule book, the MLflow client (opened lazily), the launcher, the S3 adapter (when an
endpoint is set), the metrics. Nothing here starts a thread or talks to a service.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import journal as journals
from daemon import settings
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.launchers import local
from daemon.model import progress as progress_
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.sources import base as source_base
from daemon.sources import s3


def child_environment(config: settings.Settings, environ: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of local pipeline children: the daemon's, with the S3 credentials as AWS_* variables
    (what the pipeline's tasks read, as they do from a Kubernetes Secret on the cluster)."""
    env = dict(os.environ if environ is None else environ)
    s3_config = config.sources.s3
    if s3_config.access_key is not None:
        env["AWS_ACCESS_KEY_ID"] = s3_config.access_key.get_secret_value()
    if s3_config.secret_key is not None:
        env["AWS_SECRET_ACCESS_KEY"] = s3_config.secret_key.get_secret_value()
    return env


class Liveness:
    """When the loop last completed a pass (monotonic): what ``/healthz`` and the metrics report."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def mark(self) -> None:
        self._last = time.monotonic()

    def since_last_pass(self) -> float:
        """Seconds since the loop completed a pass (or since the daemon was built, before the first)."""
        return time.monotonic() - self._last


@dataclass(kw_only=True)
class Parts:
    """The daemon's parts (see the module)."""

    config: settings.Settings
    clock: Callable[[], datetime]
    journal: journal_base.Journal
    board: source_base.StatusBoard
    sink: source_base.EventSink
    rulebook: reloading.RuleBook
    mlflow: registry.Mlflow
    store: s3.S3Store | None
    launcher: launcher_base.Launcher
    liveness: Liveness
    metrics: metrics_.Metrics
    progress: progress_.ProgressBoard = field(default_factory=progress_.ProgressBoard)


def package_for(config: settings.Settings) -> Callable[[dict[str, Any]], Path]:
    """Compiles the pipeline for a spec's shape, for the KFP launcher (the only place the daemon imports kfp)."""

    def compile_package(spec: dict[str, Any]) -> Path:
        from daemon import atomicfile
        from pipelines import arguments, graph

        shape = arguments.Shape(**spec["shape"])
        folder = config.kfp.local_pipeline_root / "pipelines"
        path = folder / f"tune{int(shape.tune)}-p{shape.parallelism}-g{shape.gpus}.yaml"
        staging = folder / f".compiling-{path.name}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        graph.compile_to(staging, image=config.kfp.trainer_image, config=config.pipeline, shape=shape)
        atomicfile.write_bytes(path, staging.read_bytes())
        staging.unlink(missing_ok=True)
        return path

    return compile_package


def make_launcher(config: settings.Settings, environ: Mapping[str, str] | None) -> launcher_base.Launcher:
    if config.kfp.launcher == "kfp":
        from daemon.launchers import kfp as kfp_launcher

        assert config.kfp.host is not None, "the settings require kfp.host with launcher kfp"
        return kfp_launcher.KfpLauncher(
            host=config.kfp.host,
            namespace=config.kfp.namespace,
            token=config.kfp.token.get_secret_value() if config.kfp.token else None,
            use_service_account_token=config.kfp.use_service_account_token,
            request_timeout_s=config.kfp.request_timeout_s,
            package_for=package_for(config),
            min_backend_version=config.kfp.min_backend_version,
            run_retries=config.kfp.run_retries,
        )
    return local.LocalLauncher(
        root=config.kfp.local_pipeline_root,
        max_concurrent=config.kfp.local_max_concurrent_runs,
        env=child_environment(config, environ),
    )


def build(
    config: settings.Settings,
    *,
    clock: Callable[[], datetime],
    environ: Mapping[str, str] | None,
    on_new: Callable[[], None],
    launcher: launcher_base.Launcher | None = None,
) -> Parts:
    """Build every part (``launcher`` replaces the configured one: benchmarks measure without training).
    Raises what opening the journal raises (a full or read-only volume, a newer schema), and a config error
    for a SQLite MLflow store where only mlflow-skinny is installed."""
    registry.configure(config.mlflow)
    registry.require_store_support(config.mlflow.tracking_uri, field="mlflow.tracking_uri")
    if config.mlflow.registry_uri is not None:
        registry.require_store_support(config.mlflow.registry_uri, field="mlflow.registry_uri")
    journal = journals.open_journal(config.journal)
    board = source_base.StatusBoard()
    rulebook = reloading.RuleBook(config.rules.path)
    store = (
        s3.S3Store(s3.make_client(config.sources.s3), endpoint=config.sources.s3.endpoint)
        if config.sources.s3.endpoint
        else None
    )
    from daemon.runtime import specs

    liveness = Liveness()
    return Parts(
        config=config,
        clock=clock,
        journal=journal,
        board=board,
        sink=source_base.EventSink(journal=journal, board=board, clock=clock, on_new=on_new),
        rulebook=rulebook,
        mlflow=registry.Mlflow(tracking_uri=specs.tracking_uri(config), registry_uri=config.mlflow.registry_uri),
        store=store,
        launcher=launcher or make_launcher(config, environ),
        liveness=liveness,
        metrics=metrics_.Metrics(
            board=board, journal=journal, rulebook=rulebook, clock=clock, since_last_pass=liveness.since_last_pass
        ),
    )
