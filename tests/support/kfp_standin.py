"""A local stand-in for the KFP API server (v2beta1) that executes what it is given, by the backend's rules.

No KFP API server can run here. This one answers the real kfp client over HTTP with KFP's response shapes
(upload a pipeline, create experiments and runs, look them up by name, get, cancel, retry, healthz with the
backend's release), keeps every uploaded pipeline package byte for byte, and, when ``execute`` is on, runs
each created run from that exact IR (:mod:`tests.support.kfp_executor`): PENDING, RUNNING, then SUCCEEDED,
FAILED or CANCELED, each task a pod under the KFP backend's and Argo's rules (:mod:`tests.support.kfp_backend`:
Argo's retry window and policy, strict JSON, Pending pods, 64 MiB shm, quotas), its tasks' states in
``run_details.task_details`` as the backend reports Argo's nodes. It is started with a backend release
(``backend_version``, the project's declared minimum by default) and refuses at run creation an IR that uses
a feature that release lacks. It records every request so tests can count submissions, and can be told to
lose create replies or to answer 503, like an API in trouble.

The "cluster" it runs on is described by the test: ``secrets`` (what ``kubectl create secret`` would
hold, changeable while a pod waits for one), ``volumes`` (claim name -> the folder its PersistentVolume is),
the image's environment, the ports task pods may reach, a quota, lost nodes. Runs execute in ``workspace``,
outside the test's own (private) folders, as the trainer image's user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from tests.support import kfp_backend

#: The trainer image's user (the Dockerfile's trainer stage, uid 10002, not the daemon's 10001): task pods run as
#: it, so a task shares no user with the daemon.
TRAINER_UID = 10002
TRAINER_PASSWD = "trainer:x:10002:10002:trainer:/tmp:/usr/sbin/nologin"


def minimum_backend() -> str:
    """The KFP backend release the project declares as its minimum (``kfp.min_backend_version``)."""
    from daemon.settings_groups import KfpSettings

    return str(KfpSettings().min_backend_version)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _package_of(body: bytes, content_type: str) -> bytes:
    """The uploaded file of a multipart/form-data body (the kfp client sends it as ``uploadfile``)."""
    boundary = re.search(r"boundary=([^;]+)", content_type)
    assert boundary is not None, f"not a multipart upload: {content_type}"
    for part in body.split(b"--" + boundary[1].strip('"').encode()):
        head, _, content = part.partition(b"\r\n\r\n")
        if b"filename=" in head:
            return content.removesuffix(b"\r\n")
    raise AssertionError("the upload carries no file")


def _inline_package(spec: dict[str, Any]) -> bytes:
    """The IR YAML of a run created with its pipeline inline (``create_run_from_pipeline_package``)."""
    documents = [spec["pipeline_spec"], spec.get("platform_spec") or {}] if "pipeline_spec" in spec else [spec]
    return yaml.safe_dump_all([d for d in documents if d], sort_keys=False).encode()


@dataclass
class Cluster:
    """What the stand-in's runs can see: Secrets, claims (folders), the image's environment."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    image_env: dict[str, str] = field(default_factory=dict)
    image_mounts: list[dict[str, Any]] = field(default_factory=list)
    inject: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra environment per executor label (fault injection: a failpoint armed in one task)."""
    reach: list[int] = field(default_factory=list)
    """Ports of 127.0.0.1 task pods may reach (S3, MLflow: the runs' network policy); nothing else."""
    quota: bool = False
    """The namespace has a ResourceQuota (a Kubeflow profile's): pods without cpu/memory requests are refused."""
    node_loss: dict[str, float] = field(default_factory=dict)
    """Executor label -> seconds: the node under the task's first pod is lost after that long (the stand-in's
    clock moves on by it; the pod is deleted, an Argo node Error)."""
    crash: dict[str, float] = field(default_factory=dict)
    """Executor label -> seconds: the task's first container is killed after that long (exit 137, an Argo
    node Failed); the clock moves on by it."""
    time_scale: float = 1.0
    """Fraction of each Argo backoff wait that is really slept (the clock moves on by the whole wait)."""


class KfpStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, execute: bool = False, cluster: Cluster | None = None, backend_version: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.execute = execute
        self.cluster = cluster or Cluster()
        self.backend_version = backend_version or minimum_backend()
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.packages: dict[str, bytes] = {}
        """Uploaded IR, byte for byte, by pipeline version id."""
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []
        self.unavailable = False  # answer 503 to run look-ups, like an API server in trouble
        self.lose_create_replies = 0  # create the next N runs, then answer 504 (the reply was lost on the way)
        self.lock = threading.Lock()
        self.workspace = Path(tempfile.mkdtemp(prefix="kfp-standin-"))
        self.workspace.chmod(0o755)  # the runs' pods reach it; the test's own folders stay private
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> KfpStandIn:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving, kill what still runs, remove the workspace."""
        self.shutdown()
        self.server_close()
        for process in list(self._processes.values()):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        shutil.rmtree(self.workspace, ignore_errors=True)

    def set_state(self, run_id: str, state: str) -> None:
        with self.lock:
            self._set(self.runs[run_id], state)

    def result_of(self, run_id: str) -> dict[str, Any]:
        """What the executor reported: state, the pipeline's output or the error."""
        loaded: dict[str, Any] = json.loads((self.workspace / "runs" / run_id / "result.json").read_text())
        return loaded

    def log_of(self, run_id: str) -> str:
        path = self.workspace / "runs" / run_id / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- executing ----------------------------------------------------------------------------------
    def _cluster_json(self) -> dict[str, Any]:
        return {
            "secrets": self.cluster.secrets,
            "volumes": self.cluster.volumes,
        }

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        """``kubectl create secret``: pods Pending for it start."""
        with self.lock:
            self.cluster.secrets[name] = data
            for run_dir in (self.workspace / "runs").glob("*"):
                (run_dir / "cluster.json").write_text(json.dumps(self._cluster_json()))

    def _execute(self, run_id: str, version_id: str, parameters: dict[str, Any], attempt: int = 0) -> None:
        run_dir = self.workspace / "runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        package = run_dir / "pipeline.yaml"
        package.write_bytes(self.packages[version_id])
        (run_dir / "result.json").unlink(missing_ok=True)
        (run_dir / "failure.txt").unlink(missing_ok=True)
        cache = self.workspace / "cache"
        cache.mkdir(exist_ok=True)
        spec = {
            "package": str(package),
            "parameters": parameters,
            "secrets": self.cluster.secrets,
            "volumes": self.cluster.volumes,
            "image_env": self.cluster.image_env,
            "image_mounts": self.cluster.image_mounts,
            "inject": self.cluster.inject,
            "reach": self.cluster.reach,
            "quota": self.cluster.quota,
            "node_loss": {} if attempt else self.cluster.node_loss,
            "crash": {} if attempt else self.cluster.crash,
            "time_scale": self.cluster.time_scale,
            "attempt": attempt,
            "uid": TRAINER_UID,
            "gid": TRAINER_UID,
            "passwd": TRAINER_PASSWD,
            "cache_root": str(cache),
        }
        (run_dir / "run.json").write_text(json.dumps(spec))
        (run_dir / "cluster.json").write_text(json.dumps(self._cluster_json()))
        with (run_dir / "log.txt").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.kfp_executor", str(run_dir)],
                cwd=Path(__file__).resolve().parents[2],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run_dir)},
                start_new_session=True,
            )
        self._processes[run_id] = process
        self.set_state(run_id, "RUNNING")
        process.wait()
        with self.lock:
            run = self.runs[run_id]
            if run["state"] in ("CANCELING", "CANCELED"):
                self._set(run, "CANCELED")
                return
            result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
            self._set(run, result.get("state", "FAILED"))
            run["finished_at"] = _now()
            if run["state"] != "SUCCEEDED":
                run["error"] = {"message": result.get("error", f"executor exited with {process.returncode}")}

    @staticmethod
    def _set(run: dict[str, Any], state: str) -> None:
        run["state"] = state
        run.setdefault("state_history", []).append({"update_time": _now(), "state": state})

    def retry(self, run_id: str) -> str | None:
        """KFP's RetryRun (``resource_manager.go``): a failed run runs again, what succeeded is kept; returns why
        not when it cannot."""
        with self.lock:
            run = self.runs.get(run_id)
            if run is None:
                return "not found"
            if run["state"] != "FAILED":
                return f"run {run_id} is {run['state']}: only a failed run can be retried"
            run.pop("error", None)
            run.pop("finished_at", None)
            self._set(run, "PENDING")
            run["_attempt"] = run.get("_attempt", 0) + 1
            if not self.execute:
                self._set(run, "RUNNING")
                return None
            arguments = (run_id, run["_version"], run["_parameters"], run["_attempt"])
        threading.Thread(target=self._execute, args=arguments, daemon=True).start()
        return None

    def task_details(self, run_id: str) -> list[dict[str, Any]]:
        """The run's tasks as KFP reports them (from Argo's nodes): name, state, times, pod."""
        found = []
        for path in sorted((self.workspace / "runs" / run_id / "tasks").glob("*.json")):
            task = json.loads(path.read_text())
            fields = ("display_name", "state", "create_time", "start_time", "end_time")
            detail = {k: task[k] for k in fields if k in task}
            if "pod_name" in task:
                detail["child_tasks"] = [{"pod_name": task["pod_name"]}]
            found.append(detail)
        return found

    def cancel(self, run_id: str) -> None:
        with self.lock:
            self.runs[run_id]["state"] = "CANCELING"
        process = self._processes.get(run_id)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            self.set_state(run_id, "CANCELED")


def _matches(item: dict[str, Any], raw_filter: str | None) -> bool:
    if not raw_filter:
        return True
    for predicate in json.loads(raw_filter).get("predicates", []):
        value = predicate.get("stringValue", predicate.get("string_value"))
        if item.get(predicate["key"]) != value:
            return False
    return True


def _public(run: dict[str, Any], tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    public = {k: v for k, v in run.items() if not k.startswith("_")}
    if tasks:
        public["run_details"] = {"task_details": tasks}
    return public


class _Handler(BaseHTTPRequestHandler):
    server: KfpStandIn

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        srv = self.server
        srv.requests.append(("GET", url.path))
        srv.authorization.append(self.headers.get("Authorization"))
        with srv.lock:
            if url.path == "/apis/v2beta1/healthz":  # apiserver/main.go newHealthzResponse
                return self._reply({"commit_sha": "standin", "tag_name": srv.backend_version, "multi_user": False})
            if url.path == "/apis/v2beta1/pipelines":
                found = [p for p in srv.pipelines.values() if _matches(p, query.get("filter"))]
                return self._reply({"pipelines": found, "total_size": len(found)} if found else {})
            if m := re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", url.path):
                versions = srv.versions.get(m[1], [])
                return self._reply({"pipeline_versions": versions, "total_size": len(versions)})
            if url.path == "/apis/v2beta1/experiments":
                found = [e for e in srv.experiments.values() if _matches(e, query.get("filter"))]
                return self._reply({"experiments": found, "total_size": len(found)} if found else {})
            if url.path.startswith("/apis/v2beta1/runs") and srv.unavailable:
                return self._reply({"error": "upstream connect error"}, 503)
            if url.path == "/apis/v2beta1/runs":
                found = [_public(r) for r in srv.runs.values() if _matches(r, query.get("filter"))]
                found.sort(key=lambda r: r["created_at"], reverse=True)
                return self._reply({"runs": found, "total_size": len(found)} if found else {})
            if m := re.fullmatch(r"/apis/v2beta1/runs/([^/:]+)", url.path):
                run = srv.runs.get(m[1])
                if run is None:
                    return self._reply({"error": "not found"}, 404)
                return self._reply(_public(run, srv.task_details(m[1])))
        self._reply({"error": f"no route {url.path}"}, 404)

    def do_POST(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        srv = self.server
        srv.requests.append(("POST", url.path))
        srv.authorization.append(self.headers.get("Authorization"))
        body = self._body()
        if m := re.fullmatch(r"/apis/v2beta1/runs/([^/:]+):(?:cancel|terminate)", url.path):
            if m[1] not in srv.runs:
                return self._reply({"error": "not found"}, 404)
            srv.cancel(m[1])
            return self._reply({})
        if m := re.fullmatch(r"/apis/v2beta1/runs/([^/:]+):retry", url.path):
            refused = srv.retry(m[1])
            if refused:
                return self._reply({"error": refused, "code": 9}, 404 if refused == "not found" else 400)
            return self._reply({})
        with srv.lock:
            if url.path == "/apis/v2beta1/pipelines/upload":
                package = _package_of(body, self.headers.get("Content-Type", ""))
                assert b"pipelineSpec" in package or b"pipelineInfo" in package, "upload carries the IR YAML"
                pipeline_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())
                name = query.get("name", "uploaded")
                srv.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": name, "created_at": _now()}
                srv.versions[pipeline_id] = [
                    {
                        "pipeline_id": pipeline_id,
                        "pipeline_version_id": version_id,
                        "display_name": name,
                        "created_at": _now(),
                    }
                ]
                srv.packages[version_id] = package
                return self._reply(srv.pipelines[pipeline_id])
            if url.path == "/apis/v2beta1/experiments":
                data = json.loads(body)
                experiment_id = str(uuid.uuid4())
                srv.experiments[experiment_id] = {
                    "experiment_id": experiment_id,
                    "display_name": data["display_name"],
                    "created_at": _now(),
                    "namespace": data.get("namespace"),
                    "storage_state": "AVAILABLE",
                }
                return self._reply(srv.experiments[experiment_id])
            if url.path == "/apis/v2beta1/runs":
                data = json.loads(body)
                run_id = str(uuid.uuid4())
                reference = data.get("pipeline_version_reference") or {}
                version_id = reference.get("pipeline_version_id")
                if version_id is None and "pipeline_spec" in data:  # a run created from a package: the IR inline
                    version_id = f"inline-{run_id}"
                    srv.packages[version_id] = _inline_package(data["pipeline_spec"])
                documents = [d for d in yaml.safe_load_all(srv.packages[version_id]) if d] if version_id else []
                refused = kfp_backend.refusal(documents, srv.backend_version) if documents else None
                if refused:  # an older API server's protos or driver reject what it does not know
                    return self._reply({"error": refused, "code": 3, "message": refused}, 400)
                srv.runs[run_id] = {
                    "run_id": run_id,
                    "display_name": data["display_name"],
                    "experiment_id": data.get("experiment_id"),
                    "pipeline_version_reference": reference,
                    "runtime_config": data.get("runtime_config"),
                    "state": "PENDING",
                    "created_at": _now(),
                    "storage_state": "AVAILABLE",
                }
                srv._set(srv.runs[run_id], "PENDING")
                if srv.execute:
                    parameters = (data.get("runtime_config") or {}).get("parameters") or {}
                    srv.runs[run_id].update(_version=version_id, _parameters=parameters)
                    threading.Thread(target=srv._execute, args=(run_id, version_id, parameters), daemon=True).start()
                if srv.lose_create_replies > 0:
                    srv.lose_create_replies -= 1
                    return self._reply({"error": "upstream request timeout"}, 504)
                return self._reply(_public(srv.runs[run_id]))
        self._reply({"error": f"no route {url.path}"}, 404)
