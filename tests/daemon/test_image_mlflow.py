"""The daemon image installs mlflow-skinny (requirements/daemon.lock), not MLflow. The daemon runs here with
every installed package that lock lacks made unimportable (a ``sitecustomize`` puts None in ``sys.modules``
for each: SQLAlchemy, alembic, pandas, numpy, Flask, ...): against the real MLflow server ``retrain up``
starts and serves and ``retrain rollback`` reads and moves a champion; with a SQLite store ``retrain up``
refuses to start, naming the setting and the remedy, before it creates anything."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from packaging.utils import canonicalize_name

from daemon.model import tags
from tests.support import locks, processes, services
from tests.support.registry import three_versions

pytestmark = pytest.mark.services

BLOCKER = """import os, sys
for name in os.environ.get("TEST_IMAGE_LACKS", "").split(","):
    if name:
        sys.modules[name] = None  # import fails with ImportError; importlib.util.find_spec answers None
"""


def image_lacks() -> list[str]:
    """Top-level modules of this environment that no distribution of the daemon image's lock provides."""
    lock = locks.load()
    image = {canonicalize_name(name) for name, _version, _marker, _hashes in lock.entries(lock.LOCKS[1].path)}
    image.add("retrain-daemon")  # the project itself (installed into the image with --no-deps)
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not module.startswith("_") and not {canonicalize_name(d) for d in dists} & image
    )


@pytest.fixture
def image_env(tmp_path: Path) -> dict[str, str]:
    lacking = image_lacks()
    assert {"sqlalchemy", "alembic", "pandas", "numpy", "flask"} <= set(lacking)
    assert "mlflow" not in lacking  # mlflow-skinny provides it
    site = tmp_path / "image-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TEST_IMAGE_LACKS": ",".join(lacking),
    }


def test_the_blocker_really_blocks(image_env: dict[str, str]) -> None:
    """The harness itself: without it full MLflow's SQLite store imports here; with it, it does not."""
    probe = ["-c", "import sqlalchemy"]
    plain = subprocess.run([sys.executable, *probe], capture_output=True, check=False)
    assert plain.returncode == 0
    env = {**os.environ, **image_env}
    blocked = subprocess.run([sys.executable, *probe], capture_output=True, env=env, check=False)
    assert blocked.returncode == 1
    assert b"sqlalchemy" in blocked.stderr


def test_a_sqlite_store_is_refused_at_start_with_only_mlflow_skinny(image_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    store = tmp_path / "mlflow.db"
    env = {
        **image_env,
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
        "RETRAIN_RULES__PATH": str(tmp_path / "rules"),
        "RETRAIN_MLFLOW__TRACKING_URI": f"sqlite:///{store}",
        "RETRAIN_HTTP__PORT": "0",
    }
    result = processes.run_cli("up", env=env)
    assert result.returncode == 2, result.stderr
    assert "field 'mlflow.tracking_uri'" in result.stderr
    assert "needs the full MLflow package" in result.stderr
    assert "retrain-daemon[local]" in result.stderr
    assert not store.exists()


def test_the_daemon_serves_and_moves_a_champion_with_only_mlflow_skinny(
    image_env: dict[str, str], mlflow_server: services.MlflowServer, tmp_path: Path
) -> None:
    model = "skinny-detector"
    client = three_versions(mlflow_server, model)
    data = tmp_path / "data"
    (data / "labels" / "train").mkdir(parents=True)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "skinny.yaml").write_text(
        f"name: skinny\ndataset: {{source: 'file://{data}'}}\nmodel: {{registered_name: {model}}}\n"
        "triggers: [{new_labels: {min_new_labels: 1000}}]\n"
    )
    daemon = processes.Daemon(tmp_path)
    daemon.env.update(image_env, RETRAIN_MLFLOW__TRACKING_URI=mlflow_server.url)
    daemon.start()
    try:
        daemon.wait_started()
        url = daemon.url()
        for page in ("/readyz", "/api/v1/status", "/api/v1/champions", f"/api/v1/models/{model}/history"):
            assert httpx.get(url + page, timeout=30).status_code == 200, page
    finally:
        assert daemon.terminate() == 0, daemon.log_tail()

    env = {
        **image_env,
        "RETRAIN_MLFLOW__TRACKING_URI": mlflow_server.url,
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
        "RETRAIN_RULES__PATH": str(tmp_path / "rules"),
    }
    result = processes.run_cli("rollback", model, "--reason", "checked from the daemon image's packages", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{model}: champion moved from v3 to v1" in result.stdout
    assert client.get_model_version_by_alias(model, tags.CHAMPION_ALIAS).version == "1"
