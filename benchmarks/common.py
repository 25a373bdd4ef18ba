"""What every benchmark shares: one JSON object of figures on stdout, the machine it ran on, percentiles,
resident memory from /proc."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` from the repository root
    sys.path.insert(0, str(ROOT))


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }


def emit(name: str, figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON object (and keep a copy in $BENCH_RESULTS, default benchmarks/results/)."""
    document = {"benchmark": name, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    document.update(figures)
    text = json.dumps(document, indent=2, sort_keys=False)
    results = Path(os.environ.get("BENCH_RESULTS", ROOT / "benchmarks" / "results"))
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(text + "\n")
    print(text, flush=True)


def percentiles(values: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """p50/p95/p99/max/mean of ``values`` (seconds stay seconds)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50": round(at(0.50), digits),
        "p95": round(at(0.95), digits),
        "p99": round(at(0.99), digits),
        "max": round(ordered[-1], digits),
        "mean": round(statistics.fmean(ordered), digits),
    }


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def peak_rss_mb(pid: int | str = "self") -> float:
    """The highest resident set size so far, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def daemon_env(root: Path, port: int) -> dict[str, str]:
    """The environment of a ``retrain up`` child: this process's without its RETRAIN_ variables, the journal,
    rules, local runs and MLflow under ``root``, the HTTP port, warnings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env.update(
        RETRAIN_JOURNAL__PATH=str(root / "journal.db"),
        RETRAIN_RULES__PATH=str(root / "rules"),
        RETRAIN_KFP__LOCAL_PIPELINE_ROOT=str(root / "runs"),
        RETRAIN_MLFLOW__TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        RETRAIN_HTTP__PORT=str(port),
        RETRAIN_LOGGING__LEVEL="warning",
    )
    return env
