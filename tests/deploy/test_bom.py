"""`make sbom` and `make audit` run for real: cyclonedx-py over the locks, checked against the CycloneDX
schema; pip-audit over the locks against a local stand-in for osv.dev's query API (these machines reach no
vulnerability service), once reporting a vulnerability, once failing, and never passing a failed audit off
as a clean one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.validation import make_schemabased_validator
from packaging.utils import canonicalize_name

from tests.support import locks

ROOT = Path(__file__).resolve().parents[2]
BOM = ROOT / "requirements" / "bom.py"
lock = locks.load()


def test_one_valid_cyclonedx_sbom_per_image_with_exactly_its_lock(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BOM), "sbom", str(tmp_path)], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings from the tools
    validator = make_schemabased_validator(OutputFormat.JSON, SchemaVersion.V1_6)
    for image, target in (("daemon", lock.LOCKS[1]), ("trainer", lock.LOCKS[2])):
        text = (tmp_path / f"{image}.cdx.json").read_text()
        assert validator.validate_str(text) is None, image
        document = json.loads(text)
        root = document["metadata"]["component"]
        assert root["name"] == "retrain-daemon" and root["version"]
        assert {"name": "retrain:image-target", "value": image} in root["properties"]
        listed = {(canonicalize_name(c["name"]), c["version"]) for c in document["components"]}
        locked = {(canonicalize_name(name), version) for name, version, _, _ in lock.entries(target.path)}
        assert listed == locked
        [edges] = [d["dependsOn"] for d in document["dependencies"] if d["ref"] == root["bom-ref"]]
        names = {c["bom-ref"]: canonicalize_name(c["name"]) for c in document["components"]}
        direct = {names[ref] for ref in edges}
        assert ("ultralytics" in direct) is (image == "trainer")
        assert {"structlog", "pydantic-settings", "tenacity"} <= direct


class Osv(BaseHTTPRequestHandler):
    """osv.dev's POST /v1/query: one advisory for urllib3, nothing for anything else; or 503 for everything."""

    failing = False
    queries: list[dict[str, object]] = []

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).queries.append(query)
        if self.failing:
            self.send_response(503)
            self.end_headers()
            return
        body: dict[str, object] = {}
        if query["package"]["name"] == "urllib3":
            body = {
                "vulns": [
                    {
                        "id": "GHSA-test-0000-0000",
                        "summary": "a test advisory",
                        "affected": [
                            {
                                "package": {"name": "urllib3", "ecosystem": "PyPI"},
                                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}],
                            }
                        ],
                    }
                ]
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def osv() -> Iterator[tuple[str, type[Osv]]]:
    handler = type("OsvHere", (Osv,), {"queries": [], "failing": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def audit(url: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "AUDIT_SERVICE": "osv", "AUDIT_OSV_URL": url, "NO_PROXY": "127.0.0.1"}
    return subprocess.run(
        [sys.executable, str(BOM), "audit"], capture_output=True, text=True, env=env, check=False, timeout=600
    )


def test_the_audit_reports_a_known_vulnerability_in_every_lock(osv: tuple[str, type[Osv]]) -> None:
    url, handler = osv
    result = audit(url)
    assert result.returncode == 1, result.stdout + result.stderr
    version = {name: v for name, v, _, _ in lock.entries(lock.LOCKS[1].path)}["urllib3"]
    for target in lock.LOCKS:
        assert f"{target.path.name}: urllib3=={version}: GHSA-test-0000-0000 (fixed in: 99.0)" in result.stdout
    daemon_total = len(lock.entries(lock.LOCKS[1].path))
    assert f"daemon.lock: {daemon_total} of {daemon_total} packages checked, 1 known vulnerabilities" in result.stdout
    assert "INCOMPLETE" not in result.stdout
    asked = {(q["package"]["name"], q["version"]) for q in handler.queries}  # type: ignore[index]
    assert ("urllib3", version) in asked


def test_an_unanswering_vulnerability_service_is_an_incomplete_audit_not_a_clean_one(
    osv: tuple[str, type[Osv]],
) -> None:
    url, handler = osv
    handler.failing = True
    result = audit(url)
    assert result.returncode == 2, result.stdout + result.stderr
    for target in lock.LOCKS:
        assert f"{target.path.name}: INCOMPLETE" in result.stdout
    assert "No known vulnerabilities" not in result.stdout
