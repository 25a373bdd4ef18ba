"""The KFP API launcher: the real kfp client over HTTP against a stand-in with KFP's response shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import errors, settings
from daemon.launchers import kfp as kfp_launcher
from daemon.model import decisions, ids, runs
from daemon.rules import loading
from daemon.runtime import specs
from daemon.sources import s3
from pipelines import arguments, graph
from tests.support import services, silent
from tests.support.kfp_standin import KfpStandIn
from tests.support.sim import Simulation, label
from tests.support.waiting import wait_until


@pytest.fixture
def standin() -> Iterator[KfpStandIn]:
    server = KfpStandIn().start()
    yield server
    server.close()


def compiler(tmp_path: Path) -> Any:
    def package_for(spec: dict[str, Any]) -> Path:
        path = tmp_path / "pipeline.yaml"
        return graph.compile_to(
            path, image="trainer:1", config=settings.PipelineSettings(), shape=arguments.Shape(**spec["shape"])
        )

    return package_for


@pytest.fixture
def spec(s3_server: services.S3Server, s3_bucket: str, tmp_path: Path) -> dict[str, Any]:
    """A launcher spec built the daemon's way: the rule's run, its manifest written to S3 by RunInputs."""
    rule = (
        loading.parse_text(
            f"name: pets\ndataset: {{source: 's3://{s3_bucket}/pets/'}}\nmodel: {{registered_name: pets-detector}}\n"
            "triggers: [{new_labels: {quiet_period: 0s}}]\n",
            file="pets.yaml",
        )
        .rules[0]
        .rule
    )
    sim = Simulation(rule)
    sim.drop([label("a", dataset="pets"), label("b", dataset="pets")])
    launch = sim.step()
    assert isinstance(launch, decisions.Launch)
    config = settings.load(
        environ={},
        overrides=[
            "kfp.launcher=kfp",
            "kfp.host=http://kfp",
            f"kfp.inputs_uri=s3://{s3_bucket}/inputs/",
            f"sources.s3.endpoint={s3_server.endpoint}",
            "sources.s3.secure=false",
            f"sources.s3.access_key={s3_server.access_key}",
            f"sources.s3.secret_key={s3_server.secret_key}",
        ],
    )
    store = s3.S3Store(s3.make_client(config.sources.s3), endpoint=s3_server.endpoint)
    run = sim.journal.get_run(launch.run_key)
    assert run is not None
    return specs.spec_for(
        rule, run, config=config, inputs=specs.RunInputs(config=config, journal=sim.journal, store=store)
    )


def submitted_run(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any], **options: Any
) -> tuple[kfp_launcher.KfpLauncher, ids.RunKey, Any]:
    """A launcher on the stand-in, the spec's run key, and the status of the run it submitted."""
    launcher = kfp_launcher.KfpLauncher(
        host=standin.url, namespace="kubeflow", package_for=compiler(tmp_path), **options
    )
    key = ids.RunKey(spec["arguments"]["run_key"])
    return launcher, key, launcher.submit(key, spec)


def test_submit_uploads_once_creates_once_and_finds_by_name(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any]
) -> None:
    launcher = kfp_launcher.KfpLauncher(
        host=standin.url, namespace="kubeflow", package_for=compiler(tmp_path), token="test-bearer"
    )
    key = ids.RunKey(spec["arguments"]["run_key"])
    assert launcher.find(key) is None
    first = launcher.submit(key, spec)
    assert first.state is runs.RunState.RUNNING
    [run] = standin.runs.values()
    assert run["display_name"] == key
    assert run["runtime_config"]["parameters"]["manifest_uri"] == spec["arguments"]["manifest_uri"]
    assert spec["arguments"]["manifest_uri"].startswith("s3://")
    [experiment] = standin.experiments.values()
    assert experiment["display_name"] == "retrain-pets"
    assert run["experiment_id"] == experiment["experiment_id"]
    [pipeline] = standin.pipelines.values()
    assert pipeline["display_name"].startswith("retrain-yolo-")
    assert run["pipeline_version_reference"]["pipeline_id"] == pipeline["pipeline_id"]

    # A retry, or a restarted daemon with a new client: the run is found, nothing is created twice.
    again = kfp_launcher.KfpLauncher(host=standin.url, namespace="kubeflow", package_for=compiler(tmp_path))
    assert again.submit(key, spec).backend_run_id == first.backend_run_id
    second_key = ids.RunKey("pets-d2")
    again.submit(second_key, {**spec, "arguments": {**spec["arguments"], "run_key": "pets-d2"}})
    assert len(standin.runs) == 2
    assert len(standin.pipelines) == 1  # same compiled content: uploaded once
    assert len(standin.experiments) == 1
    assert "Bearer test-bearer" in standin.authorization


@pytest.mark.parametrize(
    ("kfp_state", "state"),
    [
        ("RUNNING", runs.RunState.RUNNING),
        ("SUCCEEDED", runs.RunState.SUCCEEDED),
        ("FAILED", runs.RunState.FAILED),
        ("CANCELED", runs.RunState.FAILED),
        ("CANCELING", runs.RunState.RUNNING),
        ("SKIPPED", runs.RunState.SUCCEEDED),
    ],
)
def test_states_are_mapped(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any], kfp_state: str, state: runs.RunState
) -> None:
    launcher, key, submitted = submitted_run(standin, tmp_path, spec)
    standin.set_state(submitted.backend_run_id, kfp_state)
    found = launcher.find(key)
    assert found is not None and found.state is state
    if state is runs.RunState.FAILED:
        assert kfp_state in (found.error or "")


def test_cancel_terminates_the_kfp_run_through_the_api(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any]
) -> None:
    launcher, key, submitted = submitted_run(standin, tmp_path, spec)
    standin.set_state(submitted.backend_run_id, "RUNNING")
    cancelled = launcher.cancel(key, reason="by ops: wrong data")
    assert ("POST", f"/apis/v2beta1/runs/{submitted.backend_run_id}:terminate") in standin.requests
    assert cancelled is not None and cancelled.state is runs.RunState.FAILED  # CANCELED, as the tracker reads it
    assert "CANCELED" in (cancelled.error or "")
    assert launcher.cancel(key, reason="again") == cancelled
    assert launcher.cancel(ids.RunKey("nope"), reason="x") is None


def test_a_hung_api_is_temporary_within_the_request_timeout(tmp_path: Path) -> None:
    """A KFP API that accepts connections and never answers: the call gives up after its deadline."""
    with silent.silent_server() as port:
        launcher = kfp_launcher.KfpLauncher(
            host=f"http://127.0.0.1:{port}", namespace="team-a", package_for=compiler(tmp_path), request_timeout_s=1.5
        )
        started = time.monotonic()
        with pytest.raises(errors.TemporaryError, match="KFP at"):
            launcher.find(ids.RunKey("pets-d1"))
        assert time.monotonic() - started < 15


def test_unreachable_api_is_temporary(tmp_path: Path) -> None:
    launcher = kfp_launcher.KfpLauncher(
        host=f"http://127.0.0.1:{services.free_port()}", namespace="team-a", package_for=compiler(tmp_path)
    )
    with pytest.raises(errors.TemporaryError, match="KFP at http://127.0.0.1"):
        launcher.find(ids.RunKey("pets-d1"))


@pytest.mark.services
def test_the_daemon_runs_on_kfp_and_reads_the_outcome_from_mlflow(
    standin: KfpStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: services.S3Server, s3_bucket: str
) -> None:
    """`launcher: kfp`: the loop submits to the KFP API and, when the run succeeds there, reads the gate's
    decision from the version the pipeline registered in MLflow (tagged with the run key)."""

    from mlflow.tracking import MlflowClient
    from structlog.testing import capture_logs

    from daemon import reactor
    from daemon.model import tags
    from pipelines import synthetic

    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    synthetic.generate(data, count=5, seed=1)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pets.yaml").write_text(
        f"name: pets\ndataset: {{source: 'file://{data}'}}\nmodel: {{registered_name: kfp-detector}}\n"
        "triggers: [{new_labels: {min_new_labels: 5, quiet_period: 0s}}]\nlimits: {cooldown: 0s}\n"
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = settings.load(
        environ={},
        overrides=[
            f"journal.path={tmp_path / 'journal.db'}",
            f"rules.path={tmp_path / 'rules'}",
            "kfp.launcher=kfp",
            f"kfp.host={standin.url}",
            f"kfp.inputs_uri=s3://{s3_bucket}/inputs/",
            f"sources.s3.endpoint={s3_server.endpoint}",
            "sources.s3.secure=false",
            f"sources.s3.access_key={s3_server.access_key}",
            f"sources.s3.secret_key={s3_server.secret_key}",
            "kfp.poll_interval_s=1",
            f"mlflow.tracking_uri={tracking}",
            f"kfp.local_pipeline_root={tmp_path / 'runs'}",
        ],
    )
    daemon = reactor.Reactor(config)
    # The parts are driven by hand, pass by pass: the loop decides, the launching worker submits, the
    # tracking worker polls.
    daemon.refresh_rules(force=True)
    daemon.supervisor.work()
    try:
        deadline = time.monotonic() + 30
        while not standin.runs and time.monotonic() < deadline:
            daemon.step()
            daemon.launching.work()
            time.sleep(0.2)
        [run] = standin.runs.values()
        run_key = run["display_name"]
        parameters = run["runtime_config"]["parameters"]
        assert parameters["rule"] == "pets"
        # The run's manifest travels through S3, where a pipeline pod can read it, by its content hash.
        bucket, _, key = parameters["manifest_uri"].removeprefix("s3://").partition("/")
        assert bucket == s3_bucket and key.startswith("inputs/") and key.endswith(".json")
        manifest = json.loads(s3_server.client().get_object(bucket, key).read())
        assert len(manifest["items"]) == 10
        # The pipeline on the cluster registers a version and gates it; here we play that part in MLflow.
        client = MlflowClient(tracking_uri=tracking)
        client.create_registered_model("kfp-detector")
        mlflow_run = client.create_run(client.create_experiment("kfp")).info.run_id
        version = client.create_model_version("kfp-detector", source=f"runs:/{mlflow_run}/model", run_id=mlflow_run)
        for key, value in {
            tags.RUN_KEY: run_key,
            tags.GATE_DECISION: "promoted",
            tags.GATE_REASON: "first model",
            f"{tags.METRIC_PREFIX}map50_95": "0.31",
        }.items():
            client.set_model_version_tag("kfp-detector", version.version, key, value)
        # The API is in trouble for a while: polls back off instead of hammering it every tick.
        standin.unavailable = True
        with capture_logs() as captured:
            for _ in range(3):
                daemon.tracker.work()
        assert [e["event"] for e in captured].count("run_poll_failed") == 1
        standin.unavailable = False
        standin.set_state(run["run_id"], "SUCCEEDED")

        def recorded_once_the_backoff_passed() -> bool:
            daemon.tracker.work()  # a pass inside the backoff polls nothing
            found = daemon.journal.get_run(ids.RunKey(run_key))
            return found is not None and found.state is runs.RunState.SUCCEEDED

        wait_until(recorded_once_the_backoff_passed, 30, "the run to be recorded after the backoff")
        recorded = daemon.journal.get_run(ids.RunKey(run_key))
        assert recorded is not None
        assert recorded.backend == "kfp" and recorded.backend_run_id == run["run_id"]
        [promotion] = daemon.journal.promotions("kfp-detector")
        assert (promotion.kind, promotion.version, promotion.metrics["map50_95"]) == ("promoted", "1", 0.31)
        daemon.step()
        daemon.launching.work()
        assert len(standin.runs) == 1  # nothing submitted twice
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_backend_older_than_the_declared_minimum_is_refused_with_the_features_it_lacks(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    old = KfpStandIn(backend_version="2.5.0").start()
    try:
        launcher = kfp_launcher.KfpLauncher(host=old.url, namespace="kubeflow", package_for=compiler(tmp_path))
        key = ids.RunKey(spec["arguments"]["run_key"])
        with pytest.raises(errors.PermanentError) as refused:
            launcher.submit(key, spec)
        assert "runs backend 2.5.0, older than 2.14.0" in str(refused.value)
        assert "kubeflow/pipelines#11725" in str(refused.value)
        assert not old.runs and not old.pipelines  # refused before anything was uploaded
        old.backend_version = settings.KfpSettings().min_backend_version  # upgraded: no restart needed
        assert launcher.submit(key, spec).state is runs.RunState.RUNNING
    finally:
        old.close()


def test_a_failed_run_is_retried_through_kfp_s_api_within_its_budget(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any]
) -> None:
    launcher, key, submitted = submitted_run(standin, tmp_path, spec, run_retries=1)
    standin.set_state(submitted.backend_run_id, "FAILED")
    failed = launcher.find(key)
    assert failed is not None and failed.state is runs.RunState.FAILED and failed.retryable
    assert launcher.retry(failed).state is runs.RunState.RUNNING
    assert ("POST", f"/apis/v2beta1/runs/{submitted.backend_run_id}:retry") in standin.requests
    assert standin.runs[submitted.backend_run_id]["state"] == "RUNNING"
    standin.set_state(submitted.backend_run_id, "FAILED")
    # A restarted daemon (a new launcher) reads the budget from the run's state history, not its memory.
    again = kfp_launcher.KfpLauncher(host=standin.url, namespace="kubeflow", package_for=compiler(tmp_path))
    second = again.find(key)
    assert second is not None and second.state is runs.RunState.FAILED and not second.retryable
    standin.set_state(submitted.backend_run_id, "CANCELED")  # a cancelled run is never retried
    cancelled = launcher.find(key)
    assert cancelled is not None and not cancelled.retryable


def test_a_pending_run_waits_since_it_last_became_pending(
    standin: KfpStandIn, tmp_path: Path, spec: dict[str, Any]
) -> None:
    """A run retried a day after its creation is PENDING again: its wait counts from then, not its creation."""
    from datetime import UTC, datetime, timedelta

    launcher, key, submitted = submitted_run(standin, tmp_path, spec)
    run = standin.runs[submitted.backend_run_id]
    run["created_at"] = "2026-01-01T00:00:00Z"
    run["state_history"] = [{"update_time": "2026-01-01T00:00:00Z", "state": "PENDING"}]
    found = launcher.find(key)
    assert found is not None and found.pending_since == datetime(2026, 1, 1, tzinfo=UTC)
    assert found.pending_reason == f"KFP has not started run {submitted.backend_run_id} (PENDING)"
    standin.set_state(submitted.backend_run_id, "FAILED")
    standin.set_state(submitted.backend_run_id, "PENDING")  # retried
    again = launcher.find(key)
    assert again is not None and again.pending_since is not None
    assert datetime.now(UTC) - again.pending_since < timedelta(minutes=1)
    standin.set_state(submitted.backend_run_id, "RUNNING")
    running = launcher.find(key)
    assert running is not None and running.pending_since is None and running.pending_reason is None
