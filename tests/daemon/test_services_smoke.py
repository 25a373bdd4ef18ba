"""Smoke tests proving the test services are real: SeaweedFS's S3 API and an MLflow tracking server."""

from __future__ import annotations

import contextlib
import io
import secrets
from pathlib import Path

import pytest
from minio.error import S3Error

from tests.support import services

pytestmark = pytest.mark.services


def test_s3_put_list_get_delete(s3_server: services.S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    body = b"0 0.5 0.5 0.2 0.2\n"
    key = "pets/labels/train/a cat+dog %.txt"
    client.put_object(s3_bucket, key, io.BytesIO(body), length=len(body))

    listed = list(client.list_objects(s3_bucket, prefix="pets/", recursive=True))
    assert [obj.object_name for obj in listed] == [key]
    assert listed[0].size == len(body)
    assert listed[0].etag

    response = client.get_object(s3_bucket, key)
    try:
        assert response.read() == body
    finally:
        response.close()
        response.release_conn()

    client.remove_object(s3_bucket, key)
    assert list(client.list_objects(s3_bucket, prefix="pets/", recursive=True)) == []


def test_the_session_server_takes_writes_in_many_buckets(s3_server: services.S3Server) -> None:
    """The suite makes a bucket per test on one server: each is a SeaweedFS collection with volumes of its own,
    and the default growth (7 volumes a time, 100 in all) failed the 15th bucket's first write with a 500."""
    client = s3_server.client()
    names = [f"many-{i:03d}-{secrets.token_hex(3)}" for i in range(60)]
    try:
        for name in names:
            client.make_bucket(name)
            client.put_object(name, "k", io.BytesIO(b"x"), length=1)
        assert all(client.get_object(name, "k").read() == b"x" for name in names)
    finally:
        for name in names:
            with contextlib.suppress(S3Error):
                client.remove_object(name, "k")
                client.remove_bucket(name)


def test_s3_rejects_wrong_credentials(s3_server: services.S3Server, s3_bucket: str) -> None:
    from minio import Minio

    intruder = Minio(s3_server.endpoint, access_key="nobody", secret_key="not-the-secret", secure=False)
    with pytest.raises(S3Error):
        list(intruder.list_objects(s3_bucket))


def test_mlflow_logs_and_reads_back_through_the_server(
    mlflow_server: services.MlflowServer, s3_server: services.S3Server, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment("smoke")
    run = client.create_run(experiment_id, run_name="rk-smoke")
    run_id = run.info.run_id
    for step, value in enumerate([0.1, 0.25, 0.4]):
        client.log_metric(run_id, "metrics/mAP50-95B", value, step=step)
    report = tmp_path / "report.txt"
    report.write_text("validation report\n")
    client.log_artifact(run_id, str(report))
    client.set_terminated(run_id)

    history = client.get_metric_history(run_id, "metrics/mAP50-95B")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [0.1, 0.25, 0.4]
    assert client.get_run(run_id).data.metrics["metrics/mAP50-95B"] == 0.4

    downloaded = Path(client.download_artifacts(run_id, "report.txt", str(tmp_path / "down")))
    assert downloaded.read_text() == "validation report\n"

    # The artifact went through the server into the S3 bucket, not onto the server's disk.
    keys = [o.object_name for o in s3_server.client().list_objects(mlflow_server.bucket, recursive=True)]
    assert any(key.endswith(f"{run_id}/artifacts/report.txt") for key in keys), keys
