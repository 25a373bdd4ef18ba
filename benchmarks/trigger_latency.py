"""Trigger latency: from a label file landing to the launcher being called, per source.

The real daemon (``Reactor``: sources, journal, engine, the loop) runs with a rule that fires on every
new label (``min_new_labels: 1``, ``quiet_period: 0s``, no cooldown); its launcher only records when it is
called (and reports the run finished at once), so what is timed is the daemon's own path: detection,
journaling, deciding, the intent, the manifest and the launcher call. Each trial lands one new label:

- **folder**: a file written and closed in an inotify-watched folder (timed from the close);
- **webhook**: uploaded to the real S3 server, then the MinIO notification body for it POSTed to the
  daemon's webhook, as MinIO would (timed from the POST; the upload is timed apart, as ``upload``);
- **reconcile**: uploaded to the real S3 server and found by the periodic reconcile
  (``sources.reconcile_interval_s``, 1 s here; 300 s by default), timed from the start of the upload.

The same trials on a PostgreSQL journal (a local PostgreSQL 16 server, the suite's, one replica holding the
lease) are ``on_postgres`` (``--postgres-sources``, folder and webhook by default).

    python benchmarks/trigger_latency.py [--trials 200] [--sources folder,webhook,reconcile]
                                         [--postgres-sources folder,webhook]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
from common import ROOT, emit, percentiles

from daemon import logs, reactor, settings
from daemon.launchers import base as launcher_base
from daemon.model import ids, runs

LABEL = b"0 0.5 0.5 0.2 0.2\n"
TOKEN = "bench-webhook-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a local benchmark
SAMPLE = ROOT / "tests" / "data" / "events" / "minio-put-sample.json"
RULE = """name: latency
dataset: {{source: "{source}"}}
model: {{registered_name: latency-detector}}
triggers:
  - new_labels: {{min_new_labels: 1, quiet_period: 0s}}
limits: {{cooldown: 0s, max_concurrent_runs: 1}}
"""


class RecordingLauncher(launcher_base.Launcher):
    """Records when it is called; every run it is given has finished by the next look."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.called = threading.Condition()

    def submit(self, run_key: ids.RunKey, spec: dict[str, Any]) -> launcher_base.RunStatus:
        with self.called:
            self.calls.append((run_key, time.monotonic()))
            self.called.notify_all()
        return launcher_base.RunStatus(run_key=run_key, state=runs.RunState.RUNNING, backend_run_id=run_key)

    def find(self, run_key: ids.RunKey) -> launcher_base.RunStatus | None:
        if any(key == run_key for key, _ in self.calls):
            return launcher_base.RunStatus(run_key=run_key, state=runs.RunState.SUCCEEDED, backend_run_id=run_key)
        return None

    def wait_for(self, count: int, timeout_s: float = 30.0) -> float:
        with self.called:
            assert self.called.wait_for(lambda: len(self.calls) >= count, timeout_s), "the launcher was not called"
            return self.calls[count - 1][1]


#: The PostgreSQL server of ``on_postgres`` trials (None: the SQLite journal).
POSTGRES: Any = None


class Bench:
    def __init__(self, folder: Path, source: str, *overrides: str, environ: dict[str, str] | None = None) -> None:
        rules = folder / "rules"
        rules.mkdir(parents=True)
        (rules / "latency.yaml").write_text(RULE.format(source=source))
        environ = dict(environ or {})
        if POSTGRES is not None:
            environ["RETRAIN_JOURNAL__URL"] = POSTGRES.create_database()
        config = settings.load(
            environ=environ,
            overrides=[
                f"journal.path={folder / 'journal.db'}",
                f"rules.path={rules}",
                f"kfp.local_pipeline_root={folder / 'runs'}",
                f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
                "http.port=0",
                "logging.level=warning",
                *overrides,
            ],
        )
        logs.configure(config.logging, stream=sys.stderr)  # stdout carries only the JSON figures
        self.launcher = RecordingLauncher()
        self.daemon = reactor.Reactor(config, launcher=self.launcher)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        assert self.daemon.started.wait(30), "the daemon did not start"

    def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until no run is active, so that the next trial does not wait on the concurrency limit."""
        deadline = time.monotonic() + timeout_s
        while self.daemon.journal.runs(states=runs.ACTIVE, limit=1):
            assert time.monotonic() < deadline, "the last run was not recorded as ended"
            time.sleep(0.01)

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(30)


def folder_trials(root: Path, trials: int) -> list[float]:
    data = root / "data"
    (data / "labels" / "train").mkdir(parents=True)
    bench = Bench(root / "daemon", f"file://{data}")
    latencies = []
    try:
        for trial in range(trials + 1):  # the first is a warm-up (imports on the first launch)
            bench.settle()
            with (data / "labels" / "train" / f"{trial:05d}.txt").open("wb") as label:
                label.write(LABEL)
            landed = time.monotonic()
            called = bench.launcher.wait_for(trial + 1)
            if trial:
                latencies.append(called - landed)
    finally:
        bench.stop()
    return latencies


def s3_trials(root: Path, trials: int, *, via: str, uploads: list[float]) -> list[float]:
    from tests.support import services

    server = services.S3Server(workdir=root / "seaweedfs").start()
    client = server.client()
    client.make_bucket("datasets")
    environ = {
        "RETRAIN_SOURCES__S3__ACCESS_KEY": server.access_key,
        "RETRAIN_SOURCES__S3__SECRET_KEY": server.secret_key,
    }
    interval = "1" if via == "reconcile" else "3600"
    overrides = [
        f"sources.s3.endpoint={server.endpoint}",
        "sources.s3.secure=false",
        f"sources.reconcile_interval_s={interval}",
    ]
    if via == "webhook":
        overrides.append(f"sources.webhook_token={TOKEN}")
    bench = Bench(root / "daemon", "s3://datasets/latency/", *overrides, environ=environ)
    sample = json.loads(SAMPLE.read_text())
    latencies = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{bench.daemon.http_port}") as http:
            for trial in range(trials + 1):
                bench.settle()
                key = f"latency/labels/train/{trial:05d}.txt"
                landed = time.monotonic()
                put = client.put_object("datasets", key, BytesIO(LABEL), len(LABEL))
                uploaded = time.monotonic()
                if trial:
                    uploads.append(uploaded - landed)
                if via == "webhook":
                    landed = uploaded  # from the POST: what the daemon is answerable for
                    body = copy.deepcopy(sample)
                    record = body["Records"][0]
                    record["s3"]["bucket"]["name"] = "datasets"
                    record["s3"]["object"].update(key=quote_plus(key), eTag=put.etag, size=len(LABEL))
                    reply = http.post("/events/minio", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
                    assert reply.status_code == 200 and reply.json()["journaled"] == 1, reply.text
                called = bench.launcher.wait_for(trial + 1)
                if trial:
                    latencies.append(called - landed)
    finally:
        bench.stop()
        server.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--sources", default="folder,webhook,reconcile")
    parser.add_argument("--postgres-sources", default="folder,webhook", help="the same on PostgreSQL ('' for none)")
    args = parser.parse_args()
    results = trials(args.sources, args.trials)
    on_postgres: dict[str, Any] = {}
    if args.postgres_sources:
        global POSTGRES
        from tests.support import services

        with tempfile.TemporaryDirectory(prefix="retrain-bench-pg-") as folder:
            POSTGRES = services.PostgresServer(workdir=Path(folder) / "postgres").start()
            try:
                on_postgres = trials(args.postgres_sources, args.trials)
            finally:
                POSTGRES.stop()
                POSTGRES = None
    emit(
        "trigger_latency",
        {
            "unit": "seconds",
            "quiet_period_s": 0,
            "reconcile_interval_s": 1,
            "loop_tick_s": 1.0,
            "sources": results,
            "on_postgres": on_postgres,
        },
    )


def trials(sources: str, count: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for source in sources.split(","):
        with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
            if source == "folder":
                latencies = folder_trials(Path(folder), count)
            else:
                uploads: list[float] = []
                latencies = s3_trials(Path(folder), count, via=source, uploads=uploads)
                results[f"{source}_upload"] = percentiles(uploads)
        results[source] = percentiles(latencies)
    return results


if __name__ == "__main__":
    main()
