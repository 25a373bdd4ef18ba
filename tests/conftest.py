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


#: Seconds the slowest test functions took (all parameters together; `make test`'s --durations, 2 workers, 2026-12-07;
#: refresh when they move). The slowest units are handed out first, so that none is left running alone at the
#: end (longest processing time first); a test missing here weighs 10 s if marked slow, else nothing.
SECONDS = {
    "test_demo_shows_a_full_cycle_then_keeps_running": 251,
    "test_champion_moves_only_on_improvement": 150,
    "test_each_shipped_rule_runs_its_first_run_to_an_outcome": 146,
    "test_a_service_that_accepts_and_never_answers_never_stalls_the_loop": 131,
    "test_killed_between_a_finished_run_and_its_record": 106,
    "test_s3_and_pv_rules_train_register_and_promote_through_kfp_with_a_retried_promotion": 104,
    "test_batches_trigger_exactly_the_implied_runs_and_the_champion_moves_only_up": 91,
    "test_tuning_fans_out_trials_as_mlflow_child_runs_and_trains_with_the_best": 78,
    "test_killed_after_the_intent_and_after_submitting_before_recording": 73,
    "test_s3_down_for_30_seconds_mid_stream": 57,
    "test_mlflow_down_during_promotion": 50,
    "test_killed_after_events_journaled_and_during_a_run": 50,
    "test_killed_around_the_launch": 48,
    "test_coco_mini_materialize_validate_and_train": 37,
    "test_the_ha_overlay_runs_two_pods_and_the_survivor_of_a_killed_leader_launches": 39,
    "test_a_run_waiting_on_a_pending_pod_is_reported_everywhere_an_operator_looks": 19,
    "test_the_gpu_shaped_run_of_a_shipped_rule_fails_early_on_a_node_without_a_gpu_driver": 16,
    "test_a_task_pod_cannot_read_the_daemon_s_environment_journal_or_api": 17,
}
#: Units of more than one test (any other test is a unit of its own): modules whose tests share a module-scoped
#: fixture (a trained model, a served dashboard), and the tests that assert on elapsed time (latency
#: percentiles, takeovers within a TTL), which run one after another on one worker, never beside each other.
#: Seconds as above.
GROUPS = {
    "tests/pipelines/test_promoting.py": ("promoting", 90),
    "tests/http/test_dashboard.py": ("dashboard", 112),
    "tests/daemon/test_benchmarks.py": ("timing", 298),
    "tests/daemon/test_failover.py": ("timing", 298),
}


def _weight(item: pytest.Item) -> float:
    module = item.nodeid.split("::")[0]
    if module in GROUPS:
        return GROUPS[module][1]
    name = getattr(item, "originalname", item.name)  # a test function's name, without its parameters
    return SECONDS.get(name, 10 if item.get_closest_marker("slow") else 0)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its group's name, or the test itself."""
    group = GROUPS.get(nodeid.split("::")[0])
    return group[0] if group is not None else nodeid


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heaviest units first (each worker sorts the same collection the same way)."""
    items.sort(key=lambda item: -_weight(item))  # stable: the order within a weight is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist hands out units (:func:`unit_of`), in collection order (``--no-loadscope-reorder``). Its
    own ``--dist loadgroup`` cannot do this with pytest 9.2: it renames each item's ``_nodeid``, which no
    longer changes ``nodeid``, so every test ran as a unit of its own and test_promoting trained its
    40-epoch model on three workers."""
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return Units(config, log)  # type: ignore[arg-type]


def pytest_report_header(config: pytest.Config) -> list[str]:
    seed = os.environ.get("FAULT_SEED", "drawn per process (set FAULT_SEED to replay)")
    return [
        f"faults: {os.environ.get('FAULT_ITERATIONS', '3')} kills per boundary, FAULT_SEED={seed}; "
        f"failover: {os.environ.get('TEST_FAILOVER_KILLS', '3')} kills; "
        f"hypothesis profile: {os.environ.get('HYPOTHESIS_PROFILE', 'derandomized')}"
    ]


_OUTSIDE_FROM_WORKERS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """The controller collects what each xdist worker refused (a refusal that code swallowed fails no test)."""
    _OUTSIDE_FROM_WORKERS.extend(getattr(node, "workeroutput", {}).get("outside_checkout", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    outside = selfcontained.refused()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller decides
        workeroutput["outside_checkout"] = outside
        return
    outside += _OUTSIDE_FROM_WORKERS
    if outside:
        print("\n[self-contained] paths outside the checkout were opened:\n  " + "\n  ".join(sorted(set(outside))))
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
