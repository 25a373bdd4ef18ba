"""Footprint: the daemon's memory and CPU, idle with 10 rules and during a 10k-event burst.

``retrain up`` runs as its own process (10 rules, each watching its own folder with inotify; thresholds high
enough that nothing launches) and is measured from /proc: resident memory, and CPU time over the idle
window and over the burst. The burst is 10,000 label files written into the ten folders as fast as
Python can; it ends when ``retrain_journal_events`` on the daemon's own /metrics (read every 20 ms)
reaches 10,000. The rules use no class counts, so the daemon reads no label file (one with per-class
minimums would: ``--class-counts`` measures that). The ten folders are on a tmpfs (``/dev/shm``, where there is
one; ``--files-on`` to choose): this VM's disk took 0.2 to 5 s to write the same 10,000 files from one minute
to the next, and that is the writer's cost, not the daemon's. The journal stays on disk.

    python benchmarks/footprint.py [--idle-s 30] [--burst 10000] [--files-on DIR]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, cpu_seconds, daemon_env, emit, peak_rss_mb, rss_mb

RULE = """name: rule{index}
dataset: {{source: "file://{data}"}}
model: {{registered_name: footprint-{index}}}
triggers:
  - new_labels: {{min_new_labels: 1000000, quiet_period: 10m{per_class}}}
"""
TMPFS = Path("/dev/shm")  # noqa: S108 (a tmpfs on purpose: see above; each run makes its own folder there)
PER_CLASS = ', min_per_class: {"0": 1000000}'


def journal_events(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("retrain_journal_events "):
            return int(float(line.split()[1]))
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--class-counts", action="store_true", help="rules with per-class minimums")
    parser.add_argument("--files-on", default=str(TMPFS) if TMPFS.is_dir() else None, help="where the folders are")
    args = parser.parse_args()
    from tests.support import services

    with (
        tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder,
        tempfile.TemporaryDirectory(prefix="retrain-bench-files-", dir=args.files_on) as files,
    ):
        root = Path(folder)
        (root / "rules").mkdir()
        folders = []
        for index in range(args.rules):
            data = Path(files) / f"data{index}"
            (data / "labels" / "train").mkdir(parents=True)
            folders.append(data / "labels" / "train")
            (root / "rules" / f"rule{index}.yaml").write_text(
                RULE.format(index=index, data=data, per_class=PER_CLASS if args.class_counts else "")
            )
        port = services.free_port()
        env = daemon_env(root, port)
        retrain = Path(sys.executable).parent / "retrain"
        with (root / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen([str(retrain), "up"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and daemon.poll() is None, (root / "daemon.log").read_text()
                time.sleep(0.2)
            time.sleep(2)  # settle after start-up scans
            started_rss = rss_mb(daemon.pid)
            cpu0, wall0 = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.idle_s)
            cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
            idle = {
                "seconds": round(wall1 - wall0, 1),
                "rss_mb": rss_mb(daemon.pid),
                "rss_at_start_mb": started_rss,
                "cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
            }
            burst_started = time.monotonic()
            for index in range(args.burst):
                target = folders[index % len(folders)] / f"{index:06d}.txt"
                target.write_bytes(b"0 0.5 0.5 0.2 0.2\n")
            written = time.monotonic()
            while journal_events(url) < args.burst:
                assert time.monotonic() - burst_started < 600, "the burst was not journaled in 10 minutes"
                time.sleep(0.02)
            done = time.monotonic()
            cpu2 = cpu_seconds(daemon.pid)
            burst = {
                "files": args.burst,
                "write_seconds": round(written - burst_started, 2),
                "seconds_until_all_journaled": round(done - burst_started, 2),
                "lag_after_last_write_s": round(done - written, 2),
                "events_per_s": round(args.burst / (done - burst_started)),
                "cpu_seconds": round(cpu2 - cpu1, 2),
                "rss_after_mb": rss_mb(daemon.pid),
                "peak_rss_mb": peak_rss_mb(daemon.pid),
            }
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
    name = "footprint_class_counts" if args.class_counts else "footprint"
    emit(
        name,
        {
            "rules": args.rules,
            "class_counts": args.class_counts,
            "files_on": args.files_on,
            "idle": idle,
            "burst": burst,
        },
    )


if __name__ == "__main__":
    main()
