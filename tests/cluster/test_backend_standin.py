"""The stand-in executes runs by the KFP backend's and Argo's rules (tests.support.kfp_backend), and the
project's settings hold up under them: Argo's retry window and policy, a lost node retried by the daemon
through KFP's retry API, strict JSON between tasks, a 64 MiB /dev/shm, a quota, task pods isolated from the
daemon."""

# No `from __future__ import annotations`: KFP reads the component functions' annotations as objects.

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from kfp import dsl, kubernetes

from daemon import settings
from daemon.launchers import kfp as kfp_launcher
from daemon.model import ids, runs
from pipelines import graph
from tests.cluster.test_daemon_pod import buckets, daemon_pod  # noqa: F401 - buckets: a fixture
from tests.cluster.test_standin import client_for, compile_to, submit, wait_state
from tests.support import kfp_backend, kubelet, pods, services, waiting
from tests.support.kfp_standin import TRAINER_UID, Cluster, KfpStandIn
from tests.support.paths import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

HOUR = 3600.0
#: The project's cluster settings on a toy task: no S3 Secret to give (the toy reads none).
PROJECT = settings.PipelineSettings(s3_secret=None)


def counted(marker_dir: str, rule: str) -> str:
    """Counts its executions (a file per task name)."""
    from pathlib import Path

    runs = Path(marker_dir) / f"executions-{rule}"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    return "done"


def counted_after(marker_dir: str, rule: str, before: str) -> str:
    """Counts its executions; runs after ``counted``."""
    from pathlib import Path

    runs = Path(marker_dir) / f"after-{rule}"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    return before


def not_a_number() -> dict:
    return {"map50_95": float("nan")}


def shared_memory() -> int:
    """The size of the pod's /dev/shm."""
    import os  # a component's imports live in its body: only the function travels to the pod

    stats = os.statvfs("/dev/shm")
    return stats.f_blocks * stats.f_frsize


def look_at_the_daemon(pid: int, journal: str, api: str, allowed: str) -> str:
    """What a task pod can see of the daemon: its environment, its journal, its un-tokened API."""
    import json
    import urllib.request
    from pathlib import Path

    seen = {}
    for name, path in (("environ", f"/proc/{pid}/environ"), ("journal", f"/proc/{pid}/root{journal}")):
        try:
            seen[name] = Path(path).read_text()[:40]
        except OSError as exc:
            seen[name] = type(exc).__name__
    for name, url in (("api", api), ("allowed", allowed)):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - a test's loopback URL
                seen[name] = reply.read().decode()[:40]
        except OSError as exc:
            seen[name] = type(exc).__name__
    seen["processes"] = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return json.dumps(seen)


def markers(standin: KfpStandIn) -> Path:
    folder = standin.workspace / "markers"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    return folder


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield Cluster(image_env={"PATH": "/usr/bin:/bin"}, time_scale=0.0)  # Argo's waits: on the clock, not slept


def standin_for(cluster: Cluster) -> KfpStandIn:
    return KfpStandIn(execute=True, cluster=cluster).start()


def two_steps(config: settings.PipelineSettings) -> object:
    first_c = dsl.component(base_image="python:3.11", install_kfp_package=False)(counted)
    second_c = dsl.component(base_image="python:3.11", install_kfp_package=False)(counted_after)

    @dsl.pipeline(name="two-steps")
    def pipeline(marker_dir: str, rule: str) -> str:
        first = graph._cluster(first_c(marker_dir=marker_dir, rule=rule), config, gpus=0, data=False, heavy=False)
        second = second_c(marker_dir=marker_dir, rule=rule, before=first.output)
        return graph._cluster(second, config, gpus=0, data=False, heavy=True).output  # type: ignore[no-any-return]

    return pipeline


@pytest.mark.parametrize(
    ("config", "outcome"),
    [(PROJECT, "SUCCEEDED"), (settings.PipelineSettings(s3_secret=None, retry_window_s=600), "FAILED")],
    ids=["project-window", "600s-window"],
)
def test_a_task_that_fails_after_3_hours_is_retried_within_the_project_s_retry_window(
    cluster: Cluster, tmp_path: Path, config: settings.PipelineSettings, outcome: str
) -> None:
    cluster.crash = {"exec-counted-after": 3 * HOUR}  # its first container is killed 3 hours in (exit 137)
    standin = standin_for(cluster)
    try:
        client = client_for(standin)
        package = compile_to(tmp_path / "p.yaml", two_steps(config))
        run_id = submit(client, package, "crash-1", marker_dir=str(markers(standin)), rule="crash")
        assert wait_state(client, run_id) == outcome, standin.log_of(run_id)
        log = standin.log_of(run_id)
        assert "task exec-counted-after: container killed after 10800 s" in log
        if outcome == "SUCCEEDED":
            assert "task exec-counted-after: retry 1 in 30 s (Argo backoff)" in log
            assert (markers(standin) / "after-crash").read_text().endswith("x")
        else:  # the window kfp.local would have read as "the longest wait" closed 10 minutes after the start
            assert "Max duration limit exceeded" in standin.runs[run_id]["error"]["message"]
    finally:
        standin.close()


@pytest.mark.parametrize("run_retries", [1, 0])
def test_a_node_lost_under_a_task_fails_the_run_and_the_daemon_retries_it_keeping_what_succeeded(
    cluster: Cluster, tmp_path: Path, run_retries: int
) -> None:
    cluster.node_loss = {"exec-counted-after": 3 * HOUR}
    standin = standin_for(cluster)
    try:
        package = compile_to(tmp_path / "p.yaml", two_steps(PROJECT))
        launcher = kfp_launcher.KfpLauncher(
            host=standin.url, namespace="kubeflow", package_for=lambda spec: package, run_retries=run_retries
        )
        key = ids.RunKey("lost-node-1")
        launcher.submit(key, {"arguments": {"rule": "lost", "marker_dir": str(markers(standin))}})

        def ended() -> bool:  # what the daemon's tracking worker does at each poll
            status = launcher.find(key)
            assert status is not None
            if status.state is runs.RunState.FAILED and status.retryable:
                launcher.retry(status)
                return False
            return status.state.final

        waiting.wait_until(ended, 300, "the run to end", every_s=0.5)
        status = launcher.find(key)
        assert status is not None
        run_id = status.backend_run_id
        log = standin.log_of(run_id)
        assert "task exec-counted-after: node lost after 10800 s: pod deleted" in log
        assert "retry 1 in" not in log  # Argo's OnFailure: a lost pod is not retried within the run
        if run_retries:
            assert status.state is runs.RunState.SUCCEEDED, log
            assert ("POST", f"/apis/v2beta1/runs/{run_id}:retry") in standin.requests
            # The retried run ran only what had not succeeded: the first step once, over both attempts.
            assert (markers(standin) / "executions-lost").read_text() == "x"
            assert (markers(standin) / "after-lost").read_text().endswith("x")
        else:
            assert status.state is runs.RunState.FAILED
            assert "pod deleted" in (status.error or "")
    finally:
        standin.close()


def test_a_nan_between_tasks_fails_the_task_as_protojson_would(cluster: Cluster, tmp_path: Path) -> None:
    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(not_a_number)

    @dsl.pipeline(name="nan")
    def nan() -> dict:
        task = component()
        task.set_caching_options(False)
        return task.output

    standin = standin_for(cluster)
    try:
        client = client_for(standin)
        run_id = submit(client, compile_to(tmp_path / "p.yaml", nan), "nan-1")
        assert wait_state(client, run_id) == "FAILED"
        assert "invalid value NaN (protojson: not a JSON number)" in standin.runs[run_id]["error"]["message"]
    finally:
        standin.close()


def test_shm_is_64_mib_unless_mounted_and_a_quota_refuses_pods_without_requests(
    cluster: Cluster, tmp_path: Path
) -> None:
    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(shared_memory)

    def pipeline_with(*, mounted: bool, project: bool) -> object:
        @dsl.pipeline(name=f"shm-{int(mounted)}-{int(project)}")
        def shm() -> int:
            task = component()
            task.set_caching_options(False)
            if project:
                graph._cluster(task, PROJECT, gpus=0, data=False, heavy=mounted)
            elif mounted:
                kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
            return task.output

        return shm

    cluster.quota = True
    standin = standin_for(cluster)
    try:
        client = client_for(standin)
        refused = submit(client, compile_to(tmp_path / "bare.yaml", pipeline_with(mounted=False, project=False)), "q1")
        assert wait_state(client, refused) == "FAILED"
        assert "must specify requests.cpu,requests.memory" in standin.runs[refused]["error"]["message"]
        sizes = {}
        for mounted in (False, True):
            package = compile_to(tmp_path / f"p{int(mounted)}.yaml", pipeline_with(mounted=mounted, project=True))
            run_id = submit(client, package, f"shm-{int(mounted)}")
            assert wait_state(client, run_id) == "SUCCEEDED", standin.log_of(run_id)
            sizes[mounted] = int(standin.result_of(run_id)["output"])
        assert sizes[False] == pods.quantity_bytes(kfp_backend.DEFAULT_SHM)
        assert sizes[True] == pods.quantity_bytes(PROJECT.shm_size)
    finally:
        standin.close()


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"reachable": "yes"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.services
@pytest.mark.usefixtures("buckets")
def test_a_task_pod_cannot_read_the_daemon_s_environment_journal_or_api(
    cluster: Cluster, tmp_path: Path, s3_server: services.S3Server
) -> None:
    """The daemon as the rendered Deployment runs it (uid 10001, its S3 key in its environment, its journal
    on its volume, its API un-tokened for reads) and a task pod of a run beside it on the same machine."""
    pod = daemon_pod(tmp_path, s3_server, kubelet.render("base")).start()
    allowed = ThreadingHTTPServer(("127.0.0.1", 0), _Api)  # stands for S3: the runs' network policy allows it
    threading.Thread(target=allowed.serve_forever, daemon=True).start()
    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(look_at_the_daemon)

    @dsl.pipeline(name="look-at-the-daemon")
    def look(pid: int, journal: str, api: str, allowed: str) -> str:
        task = component(pid=pid, journal=journal, api=api, allowed=allowed)
        task.set_caching_options(False)
        return task.output

    cluster.reach = [allowed.server_address[1]]
    standin = standin_for(cluster)
    try:
        assert pod.pod is not None
        pid = pod.pod.pid  # unshare execs the container's command: the daemon's own process
        api = f"{pod.url}/api/v1/status"
        # What the task will try is there to be had, from this machine's side.
        assert s3_server.secret_key.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        assert Path(f"/proc/{pid}/root/var/lib/retrain/journal.db").exists()
        assert httpx.get(api, timeout=10).status_code == 200  # reads need no token (issue 45 adds one)
        client = client_for(standin)
        run_id = submit(
            client,
            compile_to(tmp_path / "p.yaml", look),
            "look-1",
            pid=pid,
            journal="/var/lib/retrain/journal.db",
            api=api,
            allowed=f"http://127.0.0.1:{allowed.server_address[1]}/",
        )
        assert wait_state(client, run_id) == "SUCCEEDED", standin.log_of(run_id)
        seen = json.loads(standin.result_of(run_id)["output"])
        assert seen["environ"] in ("FileNotFoundError", "PermissionError"), seen
        assert seen["journal"] in ("FileNotFoundError", "PermissionError"), seen
        assert pid not in seen["processes"]  # its own PID namespace
        assert seen["api"] in ("ConnectionRefusedError", "URLError"), seen  # its own network
        assert seen["allowed"] == '{"reachable": "yes"}'  # what its network policy allows is reached
        assert f"USER {TRAINER_UID}:{TRAINER_UID}" in (ROOT / "Dockerfile").read_text()  # the trainer image's
        assert pod.stop() == 0
    finally:
        pod.kill()
        standin.close()
        allowed.shutdown()
        allowed.server_close()


def test_a_run_waiting_on_a_pending_pod_is_reported_everywhere_an_operator_looks(
    cluster: Cluster, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from daemon import explaining
    from daemon.http import metrics as metrics_
    from daemon.model import decisions, notices
    from daemon.registry import mlflow as registry
    from daemon.rules import reloading
    from daemon.runtime import recording, tracking
    from daemon.sources import base as source_base
    from tests.support.sim import Simulation, label, make_rule

    component = dsl.component(base_image="python:3.11", install_kfp_package=False)(counted)

    @dsl.pipeline(name="needs-a-secret")
    def needs_a_secret(marker_dir: str, rule: str) -> str:
        task = component(marker_dir=marker_dir, rule=rule)
        kubernetes.use_secret_as_env(task, secret_name="retrain-s3", secret_key_to_env={"access_key": "KEY"})
        task.set_caching_options(False)
        return task.output

    standin = standin_for(cluster)  # the runs' namespace has no retrain-s3 Secret yet
    moved = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + moved[0]

    try:
        sim = Simulation(make_rule(name="parcels", quiet_period="0s"), now=clock())
        sim.drop([label("a", dataset="parcels", at=sim.now)])
        launch = sim.step()
        assert isinstance(launch, decisions.Launch)
        journal = sim.journal
        package = compile_to(tmp_path / "p.yaml", needs_a_secret)
        launcher = kfp_launcher.KfpLauncher(host=standin.url, namespace="team-a", package_for=lambda spec: package)
        submitted = launcher.submit(
            launch.run_key, {"arguments": {"rule": "parcels", "marker_dir": str(markers(standin))}}
        )
        journal.update_run(launch.run_key, runs.RunState.SUBMITTED, at=clock(), backend_run_id=submitted.backend_run_id)
        journal.update_run(launch.run_key, runs.RunState.RUNNING, at=clock())
        config = settings.load(environ={}, overrides=[f"kfp.local_pipeline_root={tmp_path / 'runs'}"])
        metrics = metrics_.Metrics(
            board=source_base.StatusBoard(),
            journal=journal,
            rulebook=reloading.RuleBook(tmp_path / "rules"),
            clock=clock,
            since_last_pass=lambda: 0.0,
        )
        recorder = recording.OutcomeRecorder(
            journal=journal,
            mlflow=registry.Mlflow(tracking_uri="http://127.0.0.1:9"),
            rules=lambda: {},
            metrics=metrics,
            backend="kfp",
            clock=clock,
        )
        tracker = tracking.RunTracker(config=config, journal=journal, launcher=launcher, recorder=recorder, clock=clock)

        def run() -> runs.RunRecord:
            found = journal.get_run(launch.run_key)
            assert found is not None
            return found

        waiting.wait_until(
            lambda: (
                "task counted has not started" in ((launcher.find(launch.run_key) or submitted).pending_reason or "")
            ),
            60,
            "the task reported Pending",
            explain=lambda: standin.log_of(submitted.backend_run_id),
        )
        tracker.follow(run())
        assert run().state is runs.RunState.RUNNING and run().waiting is None  # within kfp.pending_timeout_s
        moved[0] = timedelta(seconds=config.kfp.pending_timeout_s + 60)  # 16 minutes later
        tracker.follow(run())
        reason = run().waiting
        assert reason is not None and reason.startswith("waiting to start since ")
        assert " UTC: task counted has not started: pod " in reason
        assert "is Pending in namespace team-a" in reason and "kubectl describe pod" in reason
        # retrain status, the API and the dashboard read it from the journal; the metric too; one notice.
        lines = list(explaining.status_lines(explaining.status_data({}, journal, now=clock()), now=clock()))
        assert f"    WAITING: {reason}" in lines
        assert 'retrain_runs_waiting{rule="parcels"} 1.0' in metrics.render()[0].decode()
        assert notices.NoticeKind.WAITING.value in config.notify.events  # told by default
        told = [p.notice for p in journal.notices() if p.notice.kind is notices.NoticeKind.WAITING]
        assert len(told) == 1 and told[0].title == f"run {launch.run_key} of rule parcels has waited 16 min to start"
        tracker.follow(run())
        assert len([p for p in journal.notices() if p.notice.kind is notices.NoticeKind.WAITING]) == 1  # once
        # The Secret is created: the pod starts, the report is withdrawn.
        standin.create_secret("retrain-s3", {"access_key": "k"})
        waiting.wait_until(
            lambda: tracker.follow(run()) or run().waiting is None,
            120,
            "the waiting report withdrawn",
            every_s=0.5,
            explain=lambda: standin.log_of(submitted.backend_run_id),
        )
        assert 'retrain_runs_waiting{rule="parcels"}' not in metrics.render()[0].decode()
    finally:
        standin.close()


def test_the_gpu_shaped_run_of_a_shipped_rule_fails_early_on_a_node_without_a_gpu_driver(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The tests force ``gpus: 0`` elsewhere; here a shipped rule runs as compiled, GPU tasks and all, on a
    "node" without an NVIDIA driver (this machine): the accelerator check fails the run before any data is
    read, saying which driver and CUDA build are involved."""
    from daemon.rules import loading
    from pipelines import arguments
    from tests.support import trainer

    rule = loading.load_paths([ROOT / "rules"]).rules["pets"].rule
    assert rule.training.gpus > 0
    package = graph.compile_to(
        tmp_path / "pets.yaml", image="trainer:test", config=settings.PipelineSettings(), shape=arguments.Shape.of(rule)
    )
    cluster.secrets = {"retrain-s3": {"access_key": "k", "secret_key": "s"}}
    standin = standin_for(cluster)
    trainer.prepare(standin)
    try:
        client = client_for(standin)
        run_arguments = arguments.arguments(
            rule=rule, run_key="pets-gpu-1", manifest_uri="s3://retrain/inputs/none.json", mlflow_tracking_uri=""
        )
        run_id = submit(client, package, "pets-gpu-1", **run_arguments)
        assert wait_state(client, run_id) == "FAILED", standin.log_of(run_id)
        message = standin.runs[run_id]["error"]["message"]
        assert "task exec-check-accelerator" in message
        log = standin.log_of(run_id)
        assert "this run requires a GPU but torch sees none; NVIDIA driver on the node: none loaded" in log
        assert "built for CUDA" in log and "which needs driver" in log
        assert "exec-prepare-dataset" not in log  # failed before any data was downloaded
        assert "retry 1 in" in log  # a failed container: Argo retried it, as compiled
    finally:
        standin.close()
