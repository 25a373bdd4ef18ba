"""(c) Each shipped example rule runs its first run to an outcome in the cluster-faithful harness, with only
what its comments tell a user to provide: the data where the rule says, the starting weights where the rule
says (S3 or the volume), the shipped settings with this machine's addresses. Only the training size is
scaled to a CPU (epochs, image size, trials: ``scaled``); everything else is the file as shipped."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines import synthetic
from tests.support import apps, kubelet, services, trainer
from tests.support.kfp_standin import Cluster, KfpStandIn
from tests.support.minio import TOKEN
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(1800)]


def scaled(text: str) -> str:
    """The rule file with its training scaled to a CPU and nothing else changed."""
    document = yaml.safe_load(text)
    for rule in document.get("rules", [document]):
        training = rule.setdefault("training", {})
        training.update(epochs=1, imgsz=64, batch=8, gpus=0)
        if "tune" in training:
            training["tune"].update(trials=2, parallelism=2, epochs=1)
    return yaml.safe_dump(document, sort_keys=False)


def weights(path: Path, config: str) -> Path:
    """A weights file as a user would upload one (here: randomly initialised, nothing is downloaded)."""
    from ultralytics import YOLO

    path.parent.mkdir(parents=True, exist_ok=True)
    YOLO(config).save(str(path))
    return path


def upload_folder(client: Any, bucket: str, prefix: str, folder: Path) -> None:
    for path in sorted(folder.rglob("*.*")):
        client.fput_object(bucket, f"{prefix}{path.relative_to(folder).as_posix()}", str(path))


@pytest.fixture
def cluster_with_data(
    s3_server: services.S3Server, mlflow_server: services.MlflowServer, tmp_path: Path
) -> Iterator[tuple[KfpStandIn, Path]]:
    """The data and weights the shipped rules' comments ask for, in the S3 server and on the volume."""
    client = s3_server.client()
    for bucket in ("datasets", "models", "retrain"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    for name, seed in (("pets", 11), ("traffic", 12)):
        synthetic.generate(tmp_path / name, count=16, seed=seed)
        upload_folder(client, "datasets", f"{name}/", tmp_path / name)
    for name, config in (("yolov8n.pt", "yolov8n.yaml"), ("yolov8s.pt", "yolov8s.yaml")):
        client.fput_object("models", name, str(weights(tmp_path / "weights" / name, config)))
    export = tmp_path / "nfs-export"
    synthetic.generate(export / "forklifts", count=16, seed=13)
    (export / "weights").mkdir(parents=True)
    shutil.copyfile(tmp_path / "weights" / "yolov8n.pt", export / "weights" / "yolov8n.pt")
    for path in (export, *export.rglob("*")):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
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
    keep = tmp_path / "standin-logs"
    for log in (server.workspace / "runs").glob("*/log.txt"):
        (keep / log.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, keep / log.parent.name / "log.txt")
    server.close()
    for bucket in ("datasets", "models"):
        for item in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, item.object_name)


def test_each_shipped_rule_runs_its_first_run_to_an_outcome(
    s3_server: services.S3Server,
    mlflow_server: services.MlflowServer,
    cluster_with_data: tuple[KfpStandIn, Path],
    tmp_path: Path,
) -> None:
    server, export = cluster_with_data
    docs = kubelet.render("overlays/pv-datasets")
    shipped = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "retrain-rules")
    journal = tmp_path / "journal-volume"
    journal.mkdir()
    pod = kubelet.DaemonPod(
        docs=docs,
        workdir=tmp_path / "pod",
        secrets={
            "retrain-daemon": {"webhook_token": TOKEN, "api_token": apps.API_TOKEN},
            "retrain-s3": {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
        },
        claims={"retrain-journal": journal, "retrain-datasets": export},
        settings={  # the shipped settings, with this machine's addresses
            "kfp.host": server.url,
            "kfp.poll_interval_s": 2,
            "sources.s3.endpoint": s3_server.endpoint,
            "mlflow.tracking_uri": mlflow_server.url,
        },
        rules={name: scaled(text) for name, text in shipped["data"].items()},
    ).start()
    names = ["forklifts", "pets", "traffic-nightly", "traffic-weekly"]
    try:
        wait_until(lambda: httpx.get(f"{pod.url}/readyz", timeout=5).status_code == 200, 120, "readiness")
        auth = {"Authorization": f"Bearer {apps.API_TOKEN}"}
        for name in names:
            reply = httpx.post(f"{pod.url}/api/v1/rules/{name}/trigger", headers=auth, json={"actor": "test"})
            assert reply.status_code == 202, reply.text

        def outcomes() -> dict[str, dict[str, Any]]:
            found = httpx.get(f"{pod.url}/api/v1/runs", timeout=10).json()["runs"]
            return {r["rule"]: r for r in found if r["state"] in ("succeeded", "failed", "abandoned")}

        wait_until(lambda: len(outcomes()) == len(names), 1500, "every shipped rule's first run")
        done = outcomes()
        for name in names:
            run = done[name]
            assert run["state"] == "succeeded", (name, server.log_of(run["backend_run_id"])[-4000:])
            assert run["promotion"]["decision"] in ("promoted", "rejected", "refused"), run
        logs = {name: server.log_of(done[name]["backend_run_id"]) for name in names}
        assert "base model: s3://models/yolov8n.pt" in logs["pets"]
        assert "base model: file:///data/weights/yolov8n.pt, as models:/forklift-detector@champion" in logs["forklifts"]
        assert "base model: s3://models/yolov8s.pt, as models:/traffic-detector@champion" in logs["traffic-nightly"]
        assert "base model: yolov8s.yaml" in logs["traffic-weekly"]
        assert pod.stop() == 0
    finally:
        pod.kill()
