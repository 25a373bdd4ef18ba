"""A run's launcher spec: its inputs written where the run can read them, and its arguments.

The two worlds: on a cluster every task runs in a pod of the runs' namespace, on another node; it can read
S3, MLflow and the volumes the IR mounts, never the daemon's disk. So the snapshot manifest a run trains
on is written, by its content hash, to ``kfp.inputs_uri`` (``s3://bucket/prefix/<sha256>.json``), and the
run gets that URI. The local launcher's runs share this machine: their manifest is a file in the run's
folder (written atomically), unless ``kfp.inputs_uri`` is set.

The arguments come from :mod:`pipelines.arguments`, which does not import kfp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from daemon import __version__, atomicfile, errors, settings
from daemon.journal import base as journal_base
from daemon.model import rules, runs
from daemon.sources import s3
from pipelines import arguments


class RunInputs:
    """Writes run manifests where runs read them.

    Args:
        config: the settings (``kfp.inputs_uri``, the runs folder).
        journal: the snapshots runs train on.
        store: the S3 adapter, when an endpoint is configured.
    """

    def __init__(self, *, config: settings.Settings, journal: journal_base.Journal, store: s3.S3Store | None) -> None:
        self.config = config
        self.journal = journal
        self.store = store
        self.runs_root = config.kfp.local_pipeline_root

    def manifest(self, rule: rules.Rule, run: runs.RunRecord) -> dict[str, Any]:
        items = self.journal.snapshot_of(run.snapshot) if run.snapshot else []
        return {
            "dataset": rule.dataset_name,
            "source": rule.dataset.source,
            "fingerprint": run.snapshot or "",
            "items": [list(item) for item in items or []],
            "classes": rule.dataset.classes,
            "layout": rule.dataset.layout,
            "labels_dir": rule.dataset.labels_dir,
            "images_dir": rule.dataset.images_dir,
        }

    def write(self, rule: rules.Rule, run: runs.RunRecord) -> str:
        """Write the run's manifest and return the URI the run reads it from.

        Raises:
            errors.TemporaryError: S3 is unreachable (the launch waits and is retried).
        """
        data = json.dumps(self.manifest(rule, run), sort_keys=True).encode()
        target = self.config.kfp.inputs_uri
        if target is None:
            path = (self.runs_root / run.run_key / "manifest.json").resolve()
            atomicfile.write_bytes(path, data)
            return f"file://{path}"
        if self.store is None:
            raise errors.ConfigError("kfp.inputs_uri needs sources.s3.endpoint", field="kfp.inputs_uri")
        bucket, _, prefix = target.removeprefix("s3://").partition("/")
        key = f"{prefix}{hashlib.sha256(data).hexdigest()}.json"
        self.store.put_bytes(bucket, key, data)
        return f"s3://{bucket}/{key}"


def tracking_uri(config: settings.Settings) -> str:
    """The MLflow tracking URI runs get: a relative ``sqlite:///path`` made absolute (runs have their own
    working folders)."""
    uri = config.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def spec_for(rule: rules.Rule, run: runs.RunRecord, *, config: settings.Settings, inputs: RunInputs) -> dict[str, Any]:
    """What the launcher needs to start ``run``: the image, the pipeline's shape and settings, the arguments."""
    s3_config = config.sources.s3
    return {
        "image": config.kfp.trainer_image,
        "shape": dataclasses.asdict(arguments.Shape.of(rule)),
        "pipeline": config.pipeline.model_dump(mode="json")
        | ({"retries": 0} if config.kfp.launcher == "local" else {}),
        "arguments": arguments.arguments(
            rule=rule,
            run_key=run.run_key,
            manifest_uri=inputs.write(rule, run),
            mlflow_tracking_uri=tracking_uri(config),
            s3_endpoint=s3_config.endpoint or "",
            s3_secure=s3_config.secure,
            code_version=__version__,
        ),
    }
