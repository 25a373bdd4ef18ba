"""A local stand-in for the KFP API server (v2beta1) that executes what it is given.

No KFP API server can run here. This one answers the real kfp client over HTTP with KFP's response shapes
(upload a pipeline, create experiments and runs, look them up by name, get, cancel), keeps every uploaded
pipeline package byte for byte, and, when ``execute`` is on, runs each created run from that exact IR
(:mod:`tests.support.kfp_executor`): PENDING, RUNNING, then SUCCEEDED, FAILED or CANCELED, each task a pod
with the IR's secrets and volumes, retries and caching honoured. It records every request so tests can
count submissions, and can be told to lose create replies or to answer 503, like an API in trouble.

The "cluster" it runs on is described by the test: ``secrets`` (what ``kubectl create secret`` would
hold), ``volumes`` (claim name -> the folder its PersistentVolume is), the image's environment, the pods'
user. Runs execute in ``workspace``, outside the test's own (private) folders.
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

#: The trainer image's user (the Dockerfile's `retrain`, uid 10001): task pods run as it.
TRAINER_UID = 10001
TRAINER_PASSWD = "retrain:x:10001:10001:retrain:/tmp:/usr/sbin/nologin"


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
    import yaml

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


class KfpStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, execute: bool = False, cluster: Cluster | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.execute = execute
        self.cluster = cluster or Cluster()
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
            self.runs[run_id]["state"] = state

    def result_of(self, run_id: str) -> dict[str, Any]:
        """What the executor reported: state, the pipeline's output or the error."""
        loaded: dict[str, Any] = json.loads((self.workspace / "runs" / run_id / "result.json").read_text())
        return loaded

    def log_of(self, run_id: str) -> str:
        path = self.workspace / "runs" / run_id / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- executing ----------------------------------------------------------------------------------
    def _execute(self, run_id: str, version_id: str, parameters: dict[str, Any]) -> None:
        run_dir = self.workspace / "runs" / run_id
        run_dir.mkdir(parents=True)
        package = run_dir / "pipeline.yaml"
        package.write_bytes(self.packages[version_id])
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
            "uid": TRAINER_UID,
            "gid": TRAINER_UID,
            "passwd": TRAINER_PASSWD,
            "cache_root": str(cache),
        }
        (run_dir / "run.json").write_text(json.dumps(spec))
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
                run["state"] = "CANCELED"
                return
            result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
            run["state"] = result.get("state", "FAILED")
            run["finished_at"] = _now()
            if run["state"] != "SUCCEEDED":
                run["error"] = {"message": result.get("error", f"executor exited with {process.returncode}")}

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


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


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
            if url.path == "/apis/v2beta1/healthz":
                return self._reply({"multi_user": False})
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
                return self._reply(_public(run)) if run else self._reply({"error": "not found"}, 404)
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
                if srv.execute:
                    parameters = (data.get("runtime_config") or {}).get("parameters") or {}
                    version_id = reference.get("pipeline_version_id")
                    if version_id is None:  # a run created from a package: the IR travels inline
                        version_id = f"inline-{run_id}"
                        srv.packages[version_id] = _inline_package(data["pipeline_spec"])
                    threading.Thread(target=srv._execute, args=(run_id, version_id, parameters), daemon=True).start()
                if srv.lose_create_replies > 0:
                    srv.lose_create_replies -= 1
                    return self._reply({"error": "upstream request timeout"}, 504)
                return self._reply(_public(srv.runs[run_id]))
        self._reply({"error": f"no route {url.path}"}, 404)
