"""Shared fixtures: the real S3 server (SeaweedFS) and the real MLflow tracking server.

Both are session-scoped, started once on 127.0.0.1 with free ports, and stopped by their own process ids
(their process groups) at the end of the session. Their work folders and logs are deleted after a green
session and kept after a failing one, and their paths are printed so the logs can be read.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pods, services

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _keep_or_remove(request: pytest.FixtureRequest, workdir: Path, name: str) -> None:
    if request.session.testsfailed:
        print(f"\n[{name}] tests failed: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[services.S3Server]:
    """A real S3 API (SeaweedFS) with generated credentials, for the whole session."""
    workdir = tmp_path_factory.mktemp("seaweedfs")
    server = services.S3Server(workdir=workdir).start()
    try:
        yield server
    finally:
        server.stop()
        _keep_or_remove(request, workdir, "seaweedfs")


@pytest.fixture
def s3_bucket(s3_server: services.S3Server) -> str:
    """A fresh, empty bucket on the S3 server, named for this test."""
    name = f"t-{secrets.token_hex(6)}"
    s3_server.client().make_bucket(name)
    return name


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, s3_server: services.S3Server
) -> Iterator[services.MlflowServer]:
    """A real MLflow tracking server: SQLite backend store, artifacts on the S3 server."""
    workdir = tmp_path_factory.mktemp("mlflow")
    server = services.MlflowServer(workdir=workdir, s3=s3_server).start()
    try:
        yield server
    finally:
        server.stop()
        _keep_or_remove(request, workdir, "mlflow")


@pytest.fixture(scope="session", autouse=True)
def _mount_points() -> Iterator[None]:
    """Pods create missing mount points; they are removed (when empty) once the last session is over."""
    pods.session_started()
    yield
    pods.remove_mount_points()


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """The 24 real COCO photos with YOLO labels that ship in ../shared/datasets/coco-mini."""
    path = SHARED / "datasets" / "coco-mini"
    assert path.is_dir(), f"missing {path}: the shared folder must sit beside the checkout"
    return path


@pytest.fixture(scope="session")
def postgres_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[services.PostgresServer]:
    """A real PostgreSQL server for the whole session (each test takes a database of its own)."""
    workdir = tmp_path_factory.mktemp("postgres")
    server = services.PostgresServer(workdir=workdir).start()
    try:
        yield server
    finally:
        server.stop()
        _keep_or_remove(request, workdir, "postgres")
