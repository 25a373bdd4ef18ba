"""Shared fixtures: the real S3 server (SeaweedFS) and the real MLflow tracking server.

Both are session-scoped, started once on 127.0.0.1 with free ports, and stopped by their own process ids
(their process groups) at the end of the session. Their work folders and logs are deleted after a green
session and kept after a failing one, and their paths are printed so the logs can be read.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import pods, selfcontained, services
from tests.support.paths import COCO_MINI

# Property tests: no deadline (a 374 ms example on a loaded machine is not a bug) and no "too slow" health
# check, in both profiles. `make test` (and a plain pytest) is derandomized: the same examples every run, so a
# red run is the code's fault; `make test-full` draws new examples with the seed it prints.
settings.register_profile("derandomized", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("random", deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


def pytest_configure(config: pytest.Config) -> None:
    """The suite is self-contained: from here on, opening or listing a path beside the checkout (the team's
    shared folder, another clone) raises, and the session fails at its end naming each one."""
    selfcontained.guard()


#: Seconds the slowest modules took (`make test`, 2 workers, 2026-12-07). The slowest are handed out first so
#: that none is left running alone at the end (longest first); a module missing here only starts later.
MODULE_SECONDS = {
    "tests/faults/test_faults.py": 304,
    "tests/pipelines/test_pipeline_local.py": 276,
    "tests/daemon/test_demo.py": 251,
    "tests/daemon/test_benchmarks.py": 188,
    "tests/daemon/test_reliability.py": 171,
    "tests/cluster/test_shipped_rules.py": 146,
    "tests/daemon/test_daemon_crash.py": 123,
    "tests/http/test_dashboard.py": 112,
    "tests/daemon/test_failover.py": 110,
    "tests/cluster/test_end_to_end.py": 104,
    "tests/daemon/test_daemon_e2e.py": 91,
    "tests/pipelines/test_promoting.py": 90,
}
#: Modules that assert on elapsed time (latency percentiles, takeovers within a TTL) run one after another on
#: one worker, never beside each other.
TIMING_GROUP = {"tests/daemon/test_benchmarks.py", "tests/daemon/test_failover.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), a module is one unit of work (its module fixtures are set up
    once), the timing-sensitive ones share one, and the slowest units come first."""
    for item in items:
        module = item.nodeid.split("::")[0]
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group("timing" if module in TIMING_GROUP else module))
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.nodeid.split("::")[0], 0))  # stable: order kept within


def pytest_report_header(config: pytest.Config) -> list[str]:
    seed = os.environ.get("FAULT_SEED", "drawn per process (set FAULT_SEED to replay)")
    return [
        f"faults: {os.environ.get('FAULT_ITERATIONS', '3')} kills per boundary, FAULT_SEED={seed}; "
        f"failover: {os.environ.get('TEST_FAILOVER_KILLS', '3')} kills; "
        f"hypothesis profile: {os.environ.get('HYPOTHESIS_PROFILE', 'derandomized')}"
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    outside = selfcontained.refused()
    if outside:
        print("\n[self-contained] paths outside the checkout were opened:\n  " + "\n  ".join(outside))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    """The 24 real COCO photos with YOLO labels that ship in tests/data/coco-mini (read only: copy first)."""
    return COCO_MINI


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> Iterator[services.PostgresServer]:
    """A real PostgreSQL server for the whole session (each test takes a database of its own).

    Its folder is not under pytest's base temp: the server runs as another user (pgserver's), which must
    traverse the folder's parents, and any pytest session that starts on this machine meanwhile (the pods'
    test starts one on purpose) makes ``/tmp/pytest-of-USER`` private again: the server would lose its data
    directory mid-run (``PANIC: could not open file .../global/pg_control: Permission denied``)."""
    workdir = Path(tempfile.mkdtemp(prefix="retrain-test-postgres-"))
    server = services.PostgresServer(workdir=workdir).start()
    try:
        yield server
    finally:
        server.stop()
        _keep_or_remove(request, workdir, "postgres")
