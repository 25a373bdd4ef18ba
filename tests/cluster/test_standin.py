"""The KFP stand-in executes what the real kfp client uploads, as a cluster would: tasks as pods of the
image's user with only the IR's secrets and volumes, retries and caching as compiled, states as KFP's."""

# No `from __future__ import annotations`: KFP reads the component functions' annotations as objects.

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kfp
import pytest
from kfp import compiler, dsl, kubernetes

from tests.support import waiting
from tests.support.kfp_standin import Cluster, KfpStandIn

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def look_around(secret_value: str, daemon_file: str, data: str) -> str:
    """A task that reports what its pod can see."""
    import json
    import os
    from pathlib import Path

    try:
        Path(daemon_file).read_text()
        daemon = "readable"
    except OSError as exc:
        daemon = type(exc).__name__
    return json.dumps(
        {
            "uid": os.getuid(),
            "secret": os.environ.get("AWS_ACCESS_KEY_ID") == secret_value,
            "env": sorted(k for k in os.environ if k.startswith("TEST_")),
            "daemon_file": daemon,
            "data": sorted(os.listdir(data)),
            "home": os.environ["HOME"],
        }
    )


def flaky(marker_dir: str) -> str:
    """Fails on its first attempt (a marker file remembers), succeeds on the retry."""
    from pathlib import Path

    attempts = Path(marker_dir) / "attempts"
    attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
    if len(attempts.read_text()) == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


def counted(marker_dir: str) -> str:
    """Counts its executions."""
    from pathlib import Path

    runs = Path(marker_dir) / "executions"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    return "done"


def compile_to(path: Path, pipeline: object) -> Path:
    compiler.Compiler().compile(pipeline, package_path=str(path))
    return path


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[KfpStandIn]:
    data = tmp_path / "nfs-export"
    data.mkdir()
    (data / "a.txt").write_text("visible")
    data.chmod(0o755)
    cluster = Cluster(
        secrets={"creds": {"access_key": "standin-key-123"}},
        volumes={"shared-data": str(data)},
        image_env={"PATH": "/usr/bin:/bin", "TEST_IMAGE_ENV": "1"},
    )
    server = KfpStandIn(execute=True, cluster=cluster).start()
    yield server
    server.close()


def client_for(standin: KfpStandIn) -> kfp.Client:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=standin.url)


def wait_state(client: kfp.Client, run_id: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = str(client.get_run(run_id).state)
        if state in ("SUCCEEDED", "FAILED", "CANCELED"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not end")


def submit(client: kfp.Client, package: Path, name: str, **arguments: object) -> str:
    """Upload the package as a pipeline version and run that version (what the daemon's launcher does)."""
    pipeline = client.upload_pipeline(str(package), pipeline_name=f"{name}-pipeline")
    [version] = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions
    experiment = client.create_experiment(name=f"{name}-experiment")
    run = client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=name,
        params=arguments,
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
    )
    return str(run.run_id)


def test_tasks_run_as_pods_with_only_the_ir_s_secrets_and_volumes(standin: KfpStandIn, tmp_path: Path) -> None:
    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(look_around)

    @dsl.pipeline(name="look")
    def look(daemon_file: str) -> str:
        task = component(secret_value="standin-key-123", daemon_file=daemon_file, data="/data")
        kubernetes.use_secret_as_env(task, secret_name="creds", secret_key_to_env={"access_key": "AWS_ACCESS_KEY_ID"})
        kubernetes.mount_pvc(task, pvc_name="shared-data", mount_path="/data")
        task.set_caching_options(False)
        return task.output

    package = compile_to(tmp_path / "look.yaml", look)
    daemon_file = tmp_path / "journal.db"  # a file of the test's (the daemon's) own folder
    daemon_file.write_text("private")
    client = client_for(standin)
    run_id = submit(client, package, "look-1", daemon_file=str(daemon_file))
    assert wait_state(client, run_id) == "SUCCEEDED", standin.log_of(run_id)
    seen = json.loads(standin.result_of(run_id)["output"])
    assert seen["uid"] == 10002  # the trainer image's user, not the daemon's 10001
    assert seen["secret"] is True  # secretAsEnv, from the Secret the cluster holds
    assert seen["env"] == ["TEST_IMAGE_ENV"]  # the image's environment, nothing of the test's
    assert seen["daemon_file"] == "PermissionError"  # the daemon's folders are out of reach
    assert seen["data"] == ["a.txt"]  # the claim, at its mount path
    assert standin.packages and next(iter(standin.packages.values())) == package.read_bytes()  # byte for byte


def test_a_pod_whose_secret_is_missing_stays_pending_until_it_exists(standin: KfpStandIn, tmp_path: Path) -> None:
    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(counted)

    @dsl.pipeline(name="nosecret")
    def nosecret(marker_dir: str) -> str:
        task = component(marker_dir=marker_dir)
        kubernetes.use_secret_as_env(task, secret_name="absent", secret_key_to_env={"k": "K"})
        task.set_caching_options(False)
        return task.output

    markers = standin.workspace / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    client = client_for(standin)
    run_id = submit(client, compile_to(tmp_path / "p.yaml", nosecret), "nosecret-1", marker_dir=str(markers))

    def run() -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(f"{standin.url}/apis/v2beta1/runs/{run_id}", timeout=10).json()
        return found

    def pending() -> bool:
        tasks = run().get("run_details", {}).get("task_details", [])
        return bool(tasks) and tasks[0]["state"] == "PENDING"

    waiting.wait_until(pending, 60, "the task reported Pending", explain=lambda: standin.log_of(run_id))
    waiting.stays(lambda: run()["state"] == "RUNNING", 2, "the run waiting")
    run = run()
    # On a cluster the run waits (kubelet retries CreateContainerConfigError); it does not fail at once.
    assert run["state"] == "RUNNING"
    [task] = run["run_details"]["task_details"]
    assert task["display_name"] == "counted" and task["child_tasks"][0]["pod_name"].endswith("exec-counted")
    assert 'CreateContainerConfigError: secret "absent" not found' in standin.log_of(run_id)
    standin.create_secret("absent", {"k": "v"})
    assert wait_state(client, run_id) == "SUCCEEDED", standin.log_of(run_id)
    assert (markers / "executions").read_text() == "x"


def test_retries_and_caching_follow_the_compiled_ir(standin: KfpStandIn, tmp_path: Path) -> None:
    flaky_c = dsl.component(base_image="python:3.11", install_kfp_package=False)(flaky)
    counted_c = dsl.component(base_image="python:3.11", install_kfp_package=False)(counted)

    def pipeline_with(cache: bool) -> object:
        @dsl.pipeline(name=f"retry-cache-{int(cache)}")
        def retry_cache(marker_dir: str) -> str:
            first = flaky_c(marker_dir=marker_dir).set_retry(num_retries=2, backoff_duration="1s")
            first.set_caching_options(False)
            second = counted_c(marker_dir=marker_dir).after(first)
            second.set_caching_options(cache)
            return second.output

        return retry_cache

    markers = standin.workspace / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    client = client_for(standin)
    cached = compile_to(tmp_path / "cached.yaml", pipeline_with(True))
    uncached = compile_to(tmp_path / "uncached.yaml", pipeline_with(False))
    # The flaky task fails once and is retried; the cached task runs once over two runs with the same input.
    for name in ("cached-1", "cached-2"):
        (markers / "attempts").unlink(missing_ok=True)
        assert wait_state(client, submit(client, cached, name, marker_dir=str(markers))) == "SUCCEEDED"
    assert (markers / "executions").read_text() == "x"
    # Compiled with caching off, the same task with the same input runs every time.
    for name in ("uncached-1", "uncached-2"):
        (markers / "attempts").unlink(missing_ok=True)
        assert wait_state(client, submit(client, uncached, name, marker_dir=str(markers))) == "SUCCEEDED"
    assert (markers / "executions").read_text() == "xxx"
    # Without a retry policy the first failure fails the run.
    (markers / "attempts").unlink(missing_ok=True)

    @dsl.pipeline(name="no-retry")
    def no_retry(marker_dir: str) -> str:
        task = flaky_c(marker_dir=marker_dir)
        task.set_caching_options(False)
        return task.output

    failed = submit(client, compile_to(tmp_path / "no-retry.yaml", no_retry), "no-retry-1", marker_dir=str(markers))
    assert wait_state(client, failed) == "FAILED"
