"""A real peer, side by side: Dagster's S3 sensor and the daemon, against the same SeaweedFS bucket.

For each bucket size (10k and 100k objects by default; half images, half labels), one after the other on
the same server:

- **the daemon** (``retrain up``, its own process) with one rule on the bucket's prefix, fed by MinIO-style
  bucket notifications on its webhook (the S3 upload, then the notification body POSTed as MinIO would)
  and reconciling every ``sources.reconcile_interval_s`` (300 s, the default) as a safety net;
- **Dagster's S3 sensor** (``benchmarks/peer/dagster_s3_sensor.py``: ``dagster_aws``'s ``get_objects`` with a
  ``LastModified`` cursor, as Dagster's docs write it), ticked by ``dagster-daemon run`` every
  ``minimum_interval_seconds`` (30 s, Dagster's default), from its own virtual environment ``.venv-bench``
  (``make bench`` builds it from requirements/bench.lock).

Each side gets the same trials: a pause drawn from [0, interval), then one new label file; the detection
latency is from the start of its upload to the moment the side has it (the daemon: the webhook answered with
the event journaled; Dagster: the tick that returned it as a RunRequest ended). LIST requests per hour:
Dagster's counted by the sensor's S3 client over the trials (every tick lists the whole prefix); the
daemon's from the pages of one reconcile pass and its interval (the webhook path lists nothing). CPU is the
share of one core over the trials and memory the resident set at their end, of each side's whole process
tree (Dagster's daemon and its code server).

    python benchmarks/peer_sensor.py [--sizes 10000,100000] [--trials 10] [--interval 30]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import psutil
from common import ROOT, daemon_env, emit, percentiles
from reconcile_scale import BUCKET, LABEL, populate
from trigger_latency import SAMPLE, TOKEN

PEER_VENV = ROOT / ".venv-bench"
RULE = """name: peer
dataset: {{source: "s3://{bucket}/{prefix}"}}
model: {{registered_name: peer-detector}}
triggers:
  - new_labels: {{min_new_labels: 1000000, quiet_period: 10m}}
"""
DAGSTER_YAML = """run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config: {max_concurrent_runs: 0}
telemetry: {enabled: false}
"""
RECONCILE_INTERVAL_S = 300


class Tree:
    """A process and its children: CPU seconds and resident memory, from /proc through psutil."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def processes(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> float:
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return round(total / 2**20, 1)


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def trials(count: int, interval_s: float, seed: int, land: Callable[[int], float]) -> list[float]:
    """``count`` trials, each after a pause drawn from [0, interval_s); ``land`` returns one's latency."""
    rng = random.Random(seed)
    latencies = []
    for trial in range(count):
        time.sleep(rng.uniform(0, interval_s))
        latencies.append(land(trial))
    return latencies


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return -1.0


def daemon_side(server: Any, root: Path, prefix: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    from tests.support import services

    (root / "rules").mkdir(parents=True)
    (root / "rules" / "peer.yaml").write_text(RULE.format(bucket=BUCKET, prefix=prefix))
    port = services.free_port()
    env = daemon_env(root, port) | server.daemon_env()
    env.update(
        RETRAIN_SOURCES__S3__ENDPOINT=server.endpoint,
        RETRAIN_SOURCES__S3__SECURE="false",
        RETRAIN_SOURCES__WEBHOOK_TOKEN=TOKEN,
        RETRAIN_SOURCES__RECONCILE_INTERVAL_S=str(RECONCILE_INTERVAL_S),
    )
    url = f"http://127.0.0.1:{port}"
    with (root / "daemon.log").open("wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "retrain"), "up"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    client = server.client()
    sample = json.loads(SAMPLE.read_text())
    try:
        started = time.monotonic()

        def healthy() -> bool:
            assert daemon.poll() is None, (root / "daemon.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "the daemon did not start")
        # The first reconcile journals every object of the prefix: wait until it has.
        wait_until(lambda: metric(url, "retrain_journal_events") >= size, 1800, "the first reconcile did not end")
        first_pass_s = time.monotonic() - started
        tree = Tree(daemon.pid)
        cpu0, wall0 = tree.cpu_s(), time.monotonic()

        def land(trial: int) -> float:
            key = f"{prefix}labels/train/new/daemon-{trial:05d}.txt"
            landed = time.monotonic()
            put = client.put_object(BUCKET, key, BytesIO(LABEL), len(LABEL))
            body = copy.deepcopy(sample)
            record = body["Records"][0]
            record["s3"]["bucket"]["name"] = BUCKET
            record["s3"]["object"].update(key=quote_plus(key), eTag=put.etag, size=len(LABEL))
            reply = httpx.post(
                f"{url}/events/minio", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            )
            assert reply.status_code == 200 and reply.json()["journaled"] == 1, reply.text
            return time.monotonic() - landed

        latencies = trials(args.trials, args.interval, size, land)
        wall = time.monotonic() - wall0
        pages = -(-size // 1000)
        return {
            "detection_latency_s": percentiles(latencies, 4),
            "missed": 0,
            "list_requests_per_hour": round(pages * 3600 / RECONCILE_INTERVAL_S),
            "list_requests_per_hour_how": (
                f"one reconcile pass ({pages} ListObjectsV2 pages) every {RECONCILE_INTERVAL_S} s; "
                "the webhook lists nothing"
            ),
            "startup_and_first_pass_s": round(first_pass_s, 1),
            "cpu_percent": round(100 * (tree.cpu_s() - cpu0) / wall, 2),
            "rss_mb": tree.rss_mb(),
            "window_s": round(wall, 1),
        }
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)


def peer_ticks(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def dagster_side(server: Any, root: Path, prefix: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    home = root / "dagster-home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    log = root / "ticks.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "AWS_", "PEER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        PEER_BUCKET=BUCKET,
        PEER_PREFIX=prefix,
        PEER_INTERVAL_S=str(int(args.interval)),
        PEER_LOG=str(log),
        PEER_S3_URL=f"http://{server.endpoint}",
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
    )
    argv = [
        str(PEER_VENV / "bin" / "dagster-daemon"),
        "run",
        "-f",
        str(ROOT / "benchmarks" / "peer" / "dagster_s3_sensor.py"),
    ]
    with (root / "dagster.log").open("wb") as out:
        peer = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    client = server.client()
    try:
        started = time.monotonic()

        def first_tick() -> bool:
            assert peer.poll() is None, (root / "dagster.log").read_text()[-3000:]
            return bool(peer_ticks(log))

        wait_until(first_tick, 600, "Dagster's sensor did not tick")
        first_tick_s = time.monotonic() - started
        tree = Tree(peer.pid)
        cpu0, wall0 = tree.cpu_s(), time.monotonic()
        ticks_before = len(peer_ticks(log))
        missed = 0

        def land(trial: int) -> float:
            nonlocal missed
            key = f"{prefix}labels/train/new/dagster-{trial:05d}.txt"
            landed_wall, landed = time.time(), time.monotonic()
            client.put_object(BUCKET, key, BytesIO(LABEL), len(LABEL))

            def seen() -> float | None:
                assert peer.poll() is None, (root / "dagster.log").read_text()[-3000:]
                return next((t["at"] for t in peer_ticks(log) if key in t["new"]), None)

            try:
                at = wait_until(seen, 3 * args.interval + 300, f"Dagster's sensor did not report {key}")
            except TimeoutError:
                missed += 1  # the sensor's LastModified cursor can skip an object of the cursor's own second
                return time.monotonic() - landed
            return float(at) - landed_wall

        latencies = trials(args.trials, args.interval, size, land)
        wall = time.monotonic() - wall0
        window = peer_ticks(log)[ticks_before:]
        return {
            "detection_latency_s": percentiles(latencies, 4),
            "missed": missed,
            "list_requests_per_hour": round(sum(t["lists"] for t in window) * 3600 / wall),
            "list_requests_per_hour_how": f"counted: {len(window)} ticks in {wall:.0f} s, each lists the prefix",
            "list_seconds_per_tick": percentiles([t["list_s"] for t in window], 3),
            "startup_and_first_tick_s": round(first_tick_s, 1),
            "cpu_percent": round(100 * (tree.cpu_s() - cpu0) / wall, 2),
            "rss_mb": tree.rss_mb(),
            "window_s": round(wall, 1),
        }
    finally:
        os.killpg(peer.pid, signal.SIGTERM)
        try:
            peer.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(peer.pid, signal.SIGKILL)
            peer.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--interval", type=float, default=30.0, help="Dagster's minimum_interval_seconds")
    args = parser.parse_args()
    if not (PEER_VENV / "bin" / "dagster-daemon").exists():
        sys.exit(f"no Dagster in {PEER_VENV}: `make bench` builds it from requirements/bench.lock")
    from tests.support import services

    results = []
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        root = Path(folder)
        server = services.S3Server(workdir=root / "seaweedfs").start()
        try:
            client = server.client()
            client.make_bucket(BUCKET)
            for size in (int(s) for s in args.sizes.split(",")):
                prefix = f"ds{size}/"
                upload_s = populate(client, prefix, size)
                daemon = daemon_side(server, root / f"daemon-{size}", prefix, size, args)
                print(json.dumps({"objects": size, "daemon": daemon}), file=sys.stderr, flush=True)
                dagster = dagster_side(server, root / f"dagster-{size}", prefix, size, args)
                print(json.dumps({"objects": size, "dagster": dagster}), file=sys.stderr, flush=True)
                results.append(
                    {
                        "objects": size,
                        "upload_seconds": round(upload_s, 1),
                        "daemon": daemon,
                        "dagster_s3_sensor": dagster,
                    }
                )
        finally:
            server.stop()
    emit(
        "peer_sensor",
        {
            "s3_server": "SeaweedFS (weed server -s3), local",
            "dagster": "dagster-daemon run, dagster_aws.s3.sensor.get_objects (requirements/bench.lock)",
            "interval_s": args.interval,
            "trials": args.trials,
            "sizes": results,
        },
    )


if __name__ == "__main__":
    main()
