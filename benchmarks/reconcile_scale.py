"""Reconcile scale, and a polling sensor for comparison, against a real S3 server (SeaweedFS).

For each bucket size (10k, 100k and 1M objects by default; half images, half labels, as a YOLO dataset):

- the daemon's **full reconcile** (first pass, empty journal, every label's class counts read: a rule with
  per-class minimums or class drift), the same first pass when **no rule uses class counts** (no label
  read), and its **incremental** pass (nothing new): time and peak RSS, each in a fresh child process so the
  figure is the reconcile's own (a prefix larger than ``reconciling.SHARD_OBJECTS`` takes a pass per shard:
  the figure is the whole cycle), and each against one bare listing of the same prefix (minio-py, the
  polling sensor's);
- a **polling sensor** (how Dagster's and Airflow's S3 sensors work): every tick lists the whole prefix and
  diffs it against the keys it saw; its listing cost per tick (seconds, LIST requests, peak RSS), and its
  detection latency: measured over a few trials with a short interval, and derived for longer intervals
  from the measured listing time (a change waits for the next tick, uniform over the interval, then for
  the listing).

    python benchmarks/reconcile_scale.py [--sizes 10000,100000,1000000] [--poll-trials 10]

At 1M objects one listing takes about a minute, so the polling sensor's measured trials there are capped at
``--poll-trials-large`` (3); its latency for longer intervals is derived from the listing time as for the
others. Populating 1M objects takes about 5 minutes of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from common import ROOT, emit, peak_rss_mb, percentiles, rss_mb

BUCKET = "bench"
LABEL = b"0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n"


def populate(client: Any, prefix: str, count: int) -> float:
    """``count`` objects under ``prefix``: images/N.jpg and labels/N.txt pairs. Returns seconds taken."""

    def put(index: int) -> None:
        stem = f"{index // 1000:04d}/{index:07d}"
        if index % 2:
            client.put_object(BUCKET, f"{prefix}labels/train/{stem}.txt", BytesIO(LABEL), len(LABEL))
        else:
            client.put_object(BUCKET, f"{prefix}images/train/{stem}.jpg", BytesIO(b"\xff\xd8jpeg"), 6)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(count), chunksize=256))
    return time.perf_counter() - started


# --- the child: one reconcile pass in a fresh process -------------------------------------------------
def child(args: argparse.Namespace) -> None:
    from daemon import settings
    from daemon.journal import sqlite
    from daemon.sources import base, datasets, reconciling, s3

    config = settings.S3Settings(
        endpoint=args.endpoint, secure=False, access_key=args.access_key, secret_key=args.secret_key
    )
    store = s3.S3Store(s3.make_client(config), endpoint=args.endpoint)
    journal = sqlite.SqliteJournal(args.journal)
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    location = datasets.DatasetLocation(
        name="bench", source=f"s3://{BUCKET}/{args.prefix}", bucket=BUCKET, prefix=args.prefix
    )
    reconciler = reconciling.S3Reconciler(
        store=store, location=location, sink=sink, clock=sink.clock, counts_needed=lambda: not args.no_counts
    )
    before = rss_mb()
    started = time.perf_counter()
    shards = [reconciler.run_once()]  # a prefix over sources.reconcile_shard_objects takes a pass per shard
    while not shards[-1].complete:
        shards.append(reconciler.run_once())
    elapsed = time.perf_counter() - started
    journal.close()
    result = dataclasses.replace(sum(shards[1:], shards[0]), complete=shards[-1].complete)  # the cycle ended
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 3),
                "shards": len(shards),
                "shard_seconds": [round(shard.seconds, 3) for shard in shards],
                "rss_before_mb": before,
                "peak_rss_mb": peak_rss_mb(),
                "result": {k: v for k, v in vars(result).items() if isinstance(v, int | float)},
            }
        )
    )


def reconcile_in_child(server: Any, prefix: str, journal: Path, *, counts: bool = True) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(Path(__file__)),
        "--child",
        "--endpoint",
        server.endpoint,
        "--access-key",
        server.access_key,
        "--secret-key",
        server.secret_key,
        "--prefix",
        prefix,
        "--journal",
        str(journal),
        *([] if counts else ["--no-counts"]),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the polling baseline -----------------------------------------------------------------------------
class PollingSensor:
    """List the whole prefix every ``interval_s`` and report keys not seen before."""

    def __init__(self, client: Any, prefix: str, interval_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.interval_s = interval_s
        self.seen: set[str] = set()
        self.detected: dict[str, float] = {}
        self.ticks: list[float] = []
        self._stop = threading.Event()

    def tick(self) -> tuple[float, int]:
        started = time.perf_counter()
        keys = {o.object_name for o in self.client.list_objects(BUCKET, prefix=self.prefix, recursive=True)}
        elapsed = time.perf_counter() - started
        now = time.monotonic()
        for key in keys - self.seen:
            self.detected.setdefault(key, now)
        self.seen = keys
        self.ticks.append(elapsed)
        return elapsed, len(keys)

    def run(self) -> None:
        while not self._stop.is_set():
            next_at = time.monotonic() + self.interval_s
            self.tick()
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()


def polling(client: Any, prefix: str, count: int, trials: int, interval_s: float) -> dict[str, Any]:
    sensor = PollingSensor(client, prefix, interval_s)
    before = peak_rss_mb()
    first, listed = sensor.tick()
    per_tick = [sensor.tick()[0] for _ in range(3)]
    thread = threading.Thread(target=sensor.run, daemon=True)
    thread.start()
    latencies = []
    rng = random.Random(count)
    for trial in range(trials):
        time.sleep(rng.uniform(0, interval_s))
        key = f"{prefix}labels/train/new/{trial:05d}.txt"
        landed = time.monotonic()
        client.put_object(BUCKET, key, BytesIO(LABEL), len(LABEL))
        while key not in sensor.detected:
            time.sleep(0.01)
        latencies.append(sensor.detected[key] - landed)
    sensor.stop()
    thread.join(60)
    list_s = sensor.ticks[1:]
    mean_list = sum(list_s) / len(list_s)
    return {
        "objects_listed_per_tick": listed,
        "list_requests_per_tick": -(-listed // 1000),  # ListObjectsV2 pages of 1000 keys
        "list_seconds_per_tick": percentiles(list_s + per_tick),
        "first_tick_seconds": round(first, 3),
        "peak_rss_growth_mb": round(peak_rss_mb() - before, 1),
        "measured_detection_latency_s": {"interval_s": interval_s, **percentiles(latencies, 3)},
        "derived_detection_latency_s": {
            str(interval): {"mean": round(interval / 2 + mean_list, 2), "worst": round(interval + mean_list, 2)}
            for interval in (30, 60, 300)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--poll-trials", type=int, default=10)
    parser.add_argument("--poll-trials-large", type=int, default=3, help="trials at 1M objects and more")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--endpoint", "--access-key", "--secret-key", "--prefix", "--journal"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--no-counts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from tests.support import services

    results = []
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        server = services.S3Server(workdir=Path(folder) / "seaweedfs").start()
        try:
            client = server.client()
            client.make_bucket(BUCKET)
            for size in (int(s) for s in args.sizes.split(",")):
                prefix = f"ds{size}/"
                upload_s = populate(client, prefix, size)
                journal = Path(folder) / f"journal-{size}.db"
                uncounted = reconcile_in_child(server, prefix, Path(folder) / f"uncounted-{size}.db", counts=False)
                full = reconcile_in_child(server, prefix, journal)
                incremental = reconcile_in_child(server, prefix, journal)
                trials = args.poll_trials if size < 1_000_000 else min(args.poll_trials, args.poll_trials_large)
                poll = polling(client, prefix, size, trials, args.poll_interval)
                bare = poll["list_seconds_per_tick"]["p50"]
                results.append(
                    {
                        "objects": size,
                        "upload_seconds": round(upload_s, 1),
                        "daemon_full_reconcile": full,
                        "daemon_first_pass_without_counts": uncounted,
                        "daemon_incremental_reconcile": incremental,
                        "polling_sensor": poll,
                        "bare_listing_s": bare,
                        "first_pass_vs_bare_listing": round(full["seconds"] / bare, 2),
                        "first_pass_without_counts_vs_bare_listing": round(uncounted["seconds"] / bare, 2),
                        "nothing_new_vs_bare_listing": round(incremental["seconds"] / bare, 2),
                    }
                )
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            server.stop()
    emit("reconcile_scale", {"s3_server": "SeaweedFS (weed server -s3), local", "sizes": results})


if __name__ == "__main__":
    main()
