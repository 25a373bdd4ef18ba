"""A local stand-in for the KFP API server (v2beta1), answering with KFP's real response shapes.

No KFP API server can run here; this one implements the endpoints the kfp client uses to upload a
pipeline, create experiments and runs and look them up by name, with ``display_name`` filters. It records
every request so tests can count submissions. The kfp client, its request building and its response
parsing are the real ones.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KfpStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, list[dict[str, Any]]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []
        self.unavailable = False  # answer 503 to run look-ups, like an API server in trouble
        self.lose_create_replies = 0  # create the next N runs, then answer 504 (the reply was lost on the way)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> KfpStandIn:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def set_state(self, run_id: str, state: str) -> None:
        with self.lock:
            self.runs[run_id]["state"] = state


def _matches(item: dict[str, Any], raw_filter: str | None) -> bool:
    if not raw_filter:
        return True
    for predicate in json.loads(raw_filter).get("predicates", []):
        value = predicate.get("stringValue", predicate.get("string_value"))
        if item.get(predicate["key"]) != value:
            return False
    return True


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
            if url.path == "/apis/v2beta1/runs" and srv.unavailable:
                return self._reply({"error": "upstream connect error"}, 503)
            if url.path == "/apis/v2beta1/runs":
                found = [r for r in srv.runs.values() if _matches(r, query.get("filter"))]
                found.sort(key=lambda r: r["created_at"], reverse=True)
                return self._reply({"runs": found, "total_size": len(found)} if found else {})
            if m := re.fullmatch(r"/apis/v2beta1/runs/([^/]+)", url.path):
                return self._reply(srv.runs[m[1]]) if m[1] in srv.runs else self._reply({"error": "not found"}, 404)
        self._reply({"error": f"no route {url.path}"}, 404)

    def do_POST(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        srv = self.server
        srv.requests.append(("POST", url.path))
        srv.authorization.append(self.headers.get("Authorization"))
        body = self._body()
        with srv.lock:
            if url.path == "/apis/v2beta1/pipelines/upload":
                assert b"pipelineSpec" in body or b"pipelineInfo" in body, "upload carries the IR YAML"
                pipeline_id = str(uuid.uuid4())
                name = query.get("name", "uploaded")
                srv.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": name, "created_at": _now()}
                srv.versions[pipeline_id] = [
                    {
                        "pipeline_id": pipeline_id,
                        "pipeline_version_id": str(uuid.uuid4()),
                        "display_name": name,
                        "created_at": _now(),
                    }
                ]
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
                srv.runs[run_id] = {
                    "run_id": run_id,
                    "display_name": data["display_name"],
                    "experiment_id": data.get("experiment_id"),
                    "pipeline_version_reference": data.get("pipeline_version_reference"),
                    "runtime_config": data.get("runtime_config"),
                    "state": "PENDING",
                    "created_at": _now(),
                    "storage_state": "AVAILABLE",
                }
                if srv.lose_create_replies > 0:
                    srv.lose_create_replies -= 1
                    return self._reply({"error": "upstream request timeout"}, 504)
                return self._reply(srv.runs[run_id])
        self._reply({"error": f"no route {url.path}"}, 404)
