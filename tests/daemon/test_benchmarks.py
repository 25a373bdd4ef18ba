"""The benchmark scripts run (small sizes) and print one JSON object of figures each. Their figures are
not judged here: speed lives in benchmarks/ and BENCHMARKS.md, never in asserted timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def bench(name: str, *args: str, tmp_path: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env["BENCH_RESULTS"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert printed == json.loads((tmp_path / f"{name}.json").read_text())
    assert printed["benchmark"] == name
    return printed


def test_ingest(tmp_path: Path) -> None:
    figures = bench("ingest", "--bursts", "2000", tmp_path=tmp_path)
    for backend in ("bursts", "postgres_bursts"):
        [burst] = figures[backend]  # type: ignore[misc]
        assert (burst["new"], burst["duplicates"]) == (1000, 1000)


def test_trigger_latency(tmp_path: Path) -> None:
    figures = bench("trigger_latency", "--trials", "3", "--sources", "folder,webhook,reconcile", tmp_path=tmp_path)
    for source in ("folder", "webhook", "reconcile"):
        assert figures["sources"][source]["n"] == 3  # type: ignore[index]
    for source in ("folder", "webhook"):
        assert figures["on_postgres"][source]["n"] == 3  # type: ignore[index]


def test_failover(tmp_path: Path) -> None:
    figures = bench(
        "failover", "--kills", "2", "--stops", "1", "--ttl", "2", "--renew", "0.5", "--poll", "0.2", tmp_path=tmp_path
    )
    assert figures["sigkill"]["lease"]["n"] == 2  # type: ignore[index]
    assert figures["sigterm"]["leading"]["n"] == 1  # type: ignore[index]


def test_reconcile_scale(tmp_path: Path) -> None:
    args = ["--sizes", "300", "--poll-trials", "2", "--poll-interval", "0.5"]
    figures = bench("reconcile_scale", *args, tmp_path=tmp_path)
    [size] = figures["sizes"]  # type: ignore[misc]
    assert size["daemon_full_reconcile"]["result"]["new_events"] == 300
    assert size["daemon_incremental_reconcile"]["result"]["new_events"] == 0
    assert size["polling_sensor"]["objects_listed_per_tick"] >= 300


def test_footprint(tmp_path: Path) -> None:
    figures = bench("footprint", "--idle-s", "2", "--burst", "300", "--rules", "3", tmp_path=tmp_path)
    assert figures["burst"]["files"] == 300  # type: ignore[index]


def test_pipeline_overhead(tmp_path: Path) -> None:
    figures = bench("pipeline_overhead", "--images", "16", "--epochs", "1", tmp_path=tmp_path)
    assert "train-model" in figures["pipeline_tasks_s"]  # type: ignore[operator]


def test_tuning(tmp_path: Path) -> None:
    figures = bench("tuning", "--trials", "2", "--epochs", "1", "--images", "8", "--imgsz", "64", tmp_path=tmp_path)
    assert len(figures["trials"]) == 2  # type: ignore[arg-type]
    assert figures["distinct_models"] == 2  # the two trials' parameters reached the optimizer


def test_retention(tmp_path: Path) -> None:
    args = ["--events", "6000", "--files", "300", "--days", "12", "--retention-days", "3"]
    figures = bench("retention", *args, tmp_path=tmp_path)
    assert figures["rules_see_the_same"] is True
    kept, every = figures["with_retention"], figures["without_retention"]
    assert every["rows"]["events"] == 6001  # type: ignore[index]
    assert kept["rows"]["events"] == 3 * 500 + 1  # type: ignore[index]  # the last 3 days, and the late file


def test_peer_sensor(tmp_path: Path) -> None:
    """Dagster's sensor and the daemon on the same bucket; Dagster from its own .venv-bench (built here when
    missing, as `make bench` does)."""
    built = subprocess.run([sys.executable, str(ROOT / "requirements" / "lock.py"), "bench-env"], check=False)
    assert built.returncode == 0
    figures = bench("peer_sensor", "--sizes", "300", "--trials", "2", "--interval", "2", tmp_path=tmp_path)
    [size] = figures["sizes"]  # type: ignore[misc]
    for side in ("daemon", "dagster_s3_sensor"):
        assert size[side]["detection_latency_s"]["n"] == 2
        assert size[side]["missed"] == 0
    assert size["dagster_s3_sensor"]["list_requests_per_hour"] > 0
