"""Failover: two `retrain up` replicas on one PostgreSQL journal; the leader is killed (SIGKILL) again and
again, and stopped cleanly (SIGTERM, a rolling update's way) a few times; how long until the other leads.

Per kill, from the signal to: ``lease`` (the database names the standby as holder, at a newer epoch) and
``leading`` (the new leader logged ``daemon_started``: rules loaded, first scans done, workers running, the
first loop pass next). The killed replica is restarted at once, as kubelet would, and stands by. The
replicas watch a folder of the 24 COCO photos; the rule never fires (no training is timed here).

    python benchmarks/failover.py [--kills 20] [--stops 5] [--ttl 15] [--renew 5] [--poll 1]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from common import ROOT, emit, percentiles

from tests.support import services
from tests.support.processes import Daemon

COCO = ROOT / "tests" / "data" / "coco-mini"
RULE = """name: failover
dataset: {{source: "file://{data}"}}
model: {{registered_name: failover-detector}}
triggers:
  - new_labels: {{min_new_labels: 1000000}}
"""


def lease(url: str) -> tuple[str | None, int]:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("SELECT holder, epoch FROM leader_lease WHERE expires_at > clock_timestamp()").fetchone()
        except psycopg.errors.UndefinedTable:
            return None, 0
    return (row[0], int(row[1])) if row else (None, 0)


def started_lives(daemon: Daemon) -> int:
    return sum(
        '"daemon_started"' in daemon.log_path(life).read_text(errors="replace") for life in range(1, daemon.starts + 1)
    )


def wait(predicate: Any, timeout_s: float, what: str) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout_s:
            raise SystemExit(f"failover benchmark: no {what} within {timeout_s:.0f}s")
        time.sleep(0.01)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--stops", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=15.0, help="leader.ttl_s (the shipped default)")
    parser.add_argument("--renew", type=float, default=5.0, help="leader.renew_interval_s")
    parser.add_argument("--poll", type=float, default=1.0, help="leader.poll_interval_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-failover-") as folder:
        tmp = Path(folder)
        (tmp / "rules").mkdir()
        shutil.copytree(COCO, tmp / "data")
        (tmp / "rules" / "failover.yaml").write_text(RULE.format(data=tmp / "data"))
        server = services.PostgresServer(workdir=tmp / "postgres").start()
        replicas: dict[str, Daemon] = {}
        try:
            url = server.create_database()
            for name in ("a", "b"):
                replicas[name] = Daemon(tmp, journal_url=url, name=name)
                replicas[name].env.update(
                    RETRAIN_LEADER__TTL_S=str(args.ttl),
                    RETRAIN_JOURNAL__IDLE_IN_TRANSACTION_TIMEOUT_S=str(min(10.0, args.ttl / 2)),
                    RETRAIN_LEADER__RENEW_INTERVAL_S=str(args.renew),
                    RETRAIN_LEADER__POLL_INTERVAL_S=str(args.poll),
                    RETRAIN_LOGGING__LEVEL="info",
                )
            replicas["a"].start()
            wait(lambda: lease(url)[0] == "a", 60, "first leader")
            replicas["b"].start()
            time.sleep(2)
            figures: dict[str, Any] = {}
            for how, count in (("sigkill", args.kills), ("sigterm", args.stops)):
                to_lease: list[float] = []
                to_leading: list[float] = []
                for _ in range(count):
                    holder, epoch = lease(url)
                    assert holder is not None
                    leader, standby = replicas[holder], replicas["b" if holder == "a" else "a"]
                    lives = started_lives(standby)
                    time.sleep(args.renew * 0.5)  # somewhere between two renewals
                    assert leader.process is not None
                    began = time.monotonic()
                    if how == "sigkill":
                        leader.kill()
                    else:
                        leader.process.send_signal(signal.SIGTERM)
                    leased = wait(lambda: lease(url) == (standby.name, epoch + 1), args.ttl * 3 + 30, "takeover")  # noqa: B023
                    leading = wait(lambda: started_lives(standby) > lives, 60, "new leader's start")  # noqa: B023
                    to_lease.append(leased - began)
                    to_leading.append(leading - began)
                    leader.process.wait(60)
                    leader.start()  # restarted as kubelet would: it stands by
                figures[how] = {"lease": percentiles(to_lease), "leading": percentiles(to_leading)}
        finally:
            for daemon in replicas.values():
                if daemon.process is not None and daemon.process.poll() is None:
                    daemon.kill()
            server.stop()
    emit(
        "failover",
        {
            "unit": "seconds",
            "ttl_s": args.ttl,
            "renew_interval_s": args.renew,
            "poll_interval_s": args.poll,
            **figures,
            "expected": "sigkill: within ttl_s + poll_interval_s; sigterm: the lease is given up, within one poll",
        },
    )


if __name__ == "__main__":
    main()
