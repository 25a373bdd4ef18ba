"""End to end in the cluster-faithful harness: the daemon as the rendered Deployment runs it, KFP as the
executing stand-in, real SeaweedFS and MLflow servers, real Ultralytics training on the CPU.

(a) an S3 rule: labels uploaded to the bucket, MinIO's webhook body posted, the daemon submits to the KFP
    API, the stand-in executes the uploaded IR, the run trains and registers in MLflow, the gate promotes,
    the daemon records the outcome; a second batch is gated against the champion;
(b) a PV rule: the dataset is the same folder for the daemon and the runs, at the paths their manifests
    mount (the pv-datasets overlay's two claims of one export);
(d) a fault: the first promote step to move an alias is killed right after it (a failpoint armed in that
    task, once) and KFP retries it: one model version per run key, the right champion, one promotion record.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from daemon.journal import sqlite
from daemon.model import tags
from pipelines import synthetic
from tests.support import apps, kubelet, services, trainer
from tests.support.kfp_standin import Cluster, KfpStandIn
from tests.support.minio import TOKEN, body_of
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1500)]

CLASSES = "[red-box, green-box, blue-box]"
TRAINING = "training: {epochs: 3, imgsz: 64, batch: 8, gpus: 0}"


def rules(bucket: str, suffix: str) -> dict[str, str]:
    return {
        "shelves.yaml": f"""name: shelves
dataset: {{source: "s3://{bucket}/shelves/", classes: {CLASSES}}}
model: {{registered_name: shelves-{suffix}, base: yolov8n.yaml}}
triggers: [{{new_labels: {{min_new_labels: 8, quiet_period: 3s, max_wait: 10m}}}}]
{TRAINING}
promotion: {{first_model_min: 0.0, min_improvement: 0.0}}
limits: {{cooldown: 0s}}
""",
        "bins.yaml": f"""name: bins
dataset: {{source: "file:///data/bins", classes: {CLASSES}}}
model: {{registered_name: bins-{suffix}, base: yolov8n.yaml}}
triggers: [{{new_labels: {{min_new_labels: 8, quiet_period: 3s, max_wait: 10m}}}}]
{TRAINING}
promotion: {{first_model_min: 0.0}}
limits: {{cooldown: 0s}}
""",
    }


def upload(client: Any, bucket: str, prefix: str, folder: Path) -> dict[str, tuple[str, int]]:
    """Put a generated batch into the bucket; returns key -> (etag, size), as MinIO notifies them."""
    objects = {}
    for path in sorted(folder.rglob("*.*")):
        key = f"{prefix}{path.relative_to(folder).as_posix()}"
        result = client.fput_object(bucket, key, str(path))
        objects[key] = (result.etag, path.stat().st_size)
    return objects


def runs_of(pod: kubelet.DaemonPod, rule: str) -> list[dict[str, Any]]:
    found = httpx.get(f"{pod.url}/api/v1/runs", timeout=10).json()["runs"]
    return [r for r in found if r["rule"] == rule]


def finished(pod: kubelet.DaemonPod, rule: str, count: int) -> bool:
    return len([r for r in runs_of(pod, rule) if r["state"] in ("succeeded", "failed", "abandoned")]) >= count


@pytest.fixture
def standin(
    s3_server: services.S3Server, mlflow_server: services.MlflowServer, tmp_path: Path
) -> Iterator[tuple[KfpStandIn, Path]]:
    export = tmp_path / "nfs-export"  # the NFS export both claims of the pv-datasets overlay are bound to
    export.mkdir()
    export.chmod(0o755)
    server = KfpStandIn(
        execute=True,
        cluster=Cluster(
            secrets={"retrain-s3": {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key}},
            volumes={"retrain-datasets": str(export)},
            reach=[s3_server.port, mlflow_server.port],  # the runs' network policy: S3 and MLflow, nothing else
        ),
    )
    trainer.prepare(server)
    server.start()
    yield server, export
    keep = tmp_path / "standin-logs"  # the runs' logs outlive the workspace, for reading after a failure
    for log in (server.workspace / "runs").glob("*/log.txt"):
        (keep / log.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, keep / log.parent.name / "log.txt")
    server.close()


def test_s3_and_pv_rules_train_register_and_promote_through_kfp_with_a_retried_promotion(
    s3_server: services.S3Server,
    s3_bucket: str,
    mlflow_server: services.MlflowServer,
    standin: tuple[KfpStandIn, Path],
    tmp_path: Path,
) -> None:
    server, export = standin
    suffix = secrets.token_hex(3)
    markers = server.workspace / "failpoints"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    server.cluster.inject = {
        "exec-evaluate-and-promote": {
            "RETRAIN_FAILPOINT": "promotion_done!once",
            "RETRAIN_FAILPOINT_MARKERS": str(markers),
        }
    }
    journal = tmp_path / "journal-volume"
    journal.mkdir()
    pod = kubelet.DaemonPod(
        docs=kubelet.render("overlays/pv-datasets"),
        workdir=tmp_path / "pod",
        secrets={
            "retrain-daemon": {"webhook_token": TOKEN, "api_token": apps.API_TOKEN},
            "retrain-s3": {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        },
        claims={"retrain-journal": journal, "retrain-datasets": export},
        settings={
            "kfp.host": server.url,
            "kfp.poll_interval_s": 2,
            "kfp.inputs_uri": f"s3://{s3_bucket}/inputs/",
            "sources.s3.endpoint": s3_server.endpoint,
            "sources.folder_poll_interval_s": 1,
            "mlflow.tracking_uri": mlflow_server.url,
            "pipeline.retry_backoff_s": 1,
        },
        rules=rules(s3_bucket, suffix),
    ).start()
    webhook = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # (a) the S3 rule: the bucket gets a batch, MinIO posts its notification; (b) the PV rule: files land.
        batch = tmp_path / "batch1"
        synthetic.generate(batch, count=12, seed=1)
        objects = upload(s3_server.client(), s3_bucket, "shelves/", batch)
        reply = httpx.post(f"{pod.url}/events/minio", json=body_of(objects, bucket=s3_bucket), headers=webhook)
        assert reply.status_code == 200 and reply.json()["journaled"] == 24, reply.text
        shutil.copytree(batch, export / "bins")
        for path in (export / "bins", *(export / "bins").rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        wait_until(lambda: finished(pod, "shelves", 1) and finished(pod, "bins", 1), 900, "both first runs")
        for rule in ("shelves", "bins"):
            [run] = runs_of(pod, rule)
            assert run["state"] == "succeeded", (run, server.log_of(run["backend_run_id"])[-4000:])
            assert run["backend"] == "kfp"
            assert run["promotion"]["decision"] == "promoted", run
        # (a) continued: a second batch is gated against the champion on the same validation images.
        batch2 = tmp_path / "batch2"
        synthetic.generate(batch2, count=12, seed=2, prefix="second")
        more = upload(s3_server.client(), s3_bucket, "shelves/", batch2)
        assert httpx.post(f"{pod.url}/events/minio", json=body_of(more, bucket=s3_bucket), headers=webhook).is_success
        wait_until(lambda: finished(pod, "shelves", 2), 900, "the second shelves run")
        second = runs_of(pod, "shelves")[0]
        assert second["state"] == "succeeded", server.log_of(second["backend_run_id"])[-4000:]
        assert second["promotion"]["decision"] in ("promoted", "rejected")
        assert second["promotion"]["previous_champion"] == "1"
        assert "champion" in second["promotion"]["reason"]
        assert pod.stop() == 0
    finally:
        pod.kill()
    # Every run read its manifest from S3 (by content hash), never from the daemon's disk.
    for run_id, run in server.runs.items():
        uri = run["runtime_config"]["parameters"]["manifest_uri"]
        assert uri.startswith(f"s3://{s3_bucket}/inputs/"), (run_id, uri)
    assert len(server.runs) == 3  # nothing submitted twice
    # (d) the killed promotion was retried: it fired, and still one version per run key, one promotion each.
    assert [p.name.split(".")[0] for p in markers.iterdir()] == ["promotion_done"]
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for model, count in ((f"shelves-{suffix}", 2), (f"bins-{suffix}", 1)):
        versions = client.search_model_versions(f"name = '{model}'")
        keys = [v.tags[tags.RUN_KEY] for v in versions]
        assert len(keys) == len(set(keys)) == count, keys
        champion = client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS)
        assert champion.tags[tags.GATE_DECISION] == "promoted"
    stored = sqlite.SqliteJournal(journal / "journal.db")
    try:
        for model, count in ((f"shelves-{suffix}", 2), (f"bins-{suffix}", 1)):
            records = stored.promotions(model)
            assert len(records) == len({r.run_key for r in records}) == count  # one record per run
    finally:
        stored.close()
