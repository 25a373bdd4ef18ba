"""Two `retrain up` replicas on one PostgreSQL journal: the leader SIGKILLed again and again during label
bursts and during launches, and a leader SIGSTOPped past its lease and resumed after a takeover.

What must hold: every file journaled as one event, no run submitted twice, one promotion record per run
that ended, every takeover within the TTL plus a poll and one loop pass, and nothing written by a paused
leader after the takeover lands. The replicas share the rules, the data folder, the local launcher's run
folder and the MLflow store, as pods share a volume and services; each has its own process and logs.

``TEST_FAILOVER_KILLS`` sets how many times the leader is killed: 3 by default and in `make test`, 20 (the
issue's count) in `make test-full`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from daemon.model import runs
from daemon.runtime import leading
from pipelines import synthetic
from tests.support import services
from tests.support.processes import Daemon
from tests.support.waiting import stays, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

KILLS = int(os.environ.get("TEST_FAILOVER_KILLS", "3"))
TTL_S, RENEW_S, POLL_S = 3.0, 1.0, 0.2
#: A takeover may take the TTL (the dead leader's last renewal counts from before the kill), a standby's
#: poll, and one loop pass; plus SLACK_S for a loaded machine. It is an allowance, not a latency target:
#: `make test` runs this beside two other workers (trainings included) on 2 cores; takeovers measured 5.2-6.5 s
#: there while another suite's last minutes shared the cores, and up to 12.7 s with a second suite's install.
#: Alone, this test measured p50 2.87 s, max 3.04 s (BENCHMARKS.md); benchmarks/failover.py measures the
#: shipped TTL. TEST_FAILOVER_SLACK_S=2 asks for the strict bound of earlier runs.
SLACK_S = float(os.environ.get("TEST_FAILOVER_SLACK_S", "6.0"))

RULE = """
name: ha
dataset: {{source: "file://{data}", classes: [red-box, green-box, blue-box]}}
model: {{registered_name: ha-detector, base: yolov8n.yaml}}
triggers:
  - new_labels: {{min_new_labels: 10, quiet_period: 5s, max_wait: 10m}}
training: {{epochs: 1, imgsz: 64, batch: 8, gpus: 0}}
promotion: {{first_model_min: 0.0}}
limits: {{cooldown: 0s}}
"""


@dataclass
class Replicas:
    """Two replicas, ``a`` and ``b``, and the database they share."""

    url: str
    tmp: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def lease(self) -> tuple[str | None, int, bool]:
        with psycopg.connect(self.url) as conn:
            try:
                row = conn.execute("SELECT holder, epoch, expires_at < clock_timestamp() FROM leader_lease").fetchone()
            except psycopg.errors.UndefinedTable:  # the first replica has not applied the schema yet
                return None, 0, True
        assert row is not None
        return row[0], int(row[1]), bool(row[2])

    def leader(self) -> Daemon:
        holder, _, expired = self.lease()
        assert holder is not None and not expired, "nobody leads"
        return self.daemons[holder]

    def other(self, daemon: Daemon) -> Daemon:
        return next(d for d in self.daemons.values() if d is not daemon)

    def rows(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(sql, params).fetchall())

    def logged(self, event: str) -> list[dict[str, object]]:
        return [line for d in self.daemons.values() for line in d.logged(event)]


@pytest.fixture
def replicas(tmp_path: Path, postgres_server: services.PostgresServer) -> Iterator[Replicas]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "rules" / "ha.yaml").write_text(RULE.format(data=tmp_path / "data"))
    found = Replicas(url=postgres_server.create_database(), tmp=tmp_path)
    for name in ("a", "b"):
        daemon = Daemon(tmp_path, journal_url=found.url, name=name)
        daemon.env.update(
            RETRAIN_LEADER__TTL_S=str(TTL_S),
            RETRAIN_JOURNAL__IDLE_IN_TRANSACTION_TIMEOUT_S=str(TTL_S / 2),
            RETRAIN_LEADER__RENEW_INTERVAL_S=str(RENEW_S),
            RETRAIN_LEADER__POLL_INTERVAL_S=str(POLL_S),
        )
        found.daemons[name] = daemon
    found.daemons["a"].start()
    wait_until(lambda: found.lease()[0] == "a", 60, "replica a to take the lease")
    found.daemons["b"].start()
    yield found
    for daemon in found.daemons.values():
        if daemon.process is not None and daemon.process.poll() is None:
            os.kill(daemon.process.pid, signal.SIGCONT)
            daemon.kill()


def _files_on_disk(data: Path) -> set[str]:
    return {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.name != "data.yaml"}


def _takeover(replicas: Replicas, standby: Daemon, epoch: int, killed_at: float) -> float:
    """Seconds from the kill until ``standby`` holds the lease at a newer epoch."""
    deadline = killed_at + TTL_S + POLL_S + 30
    while time.monotonic() < deadline:
        holder, now_epoch, expired = replicas.lease()
        if holder == standby.name and now_epoch > epoch and not expired:
            return time.monotonic() - killed_at
        time.sleep(0.02)
    raise AssertionError(f"no takeover by {standby.name} within {deadline - killed_at:.0f}s:\n{standby.explain()}")


def _check_runs(replicas: Replicas) -> list[tuple[object, ...]]:
    """No run submitted twice, one promotion record per run that ended, nothing else in the run folder."""
    journal_runs = replicas.rows("SELECT run_key, state FROM runs")
    started: dict[str, int] = {}
    for line in replicas.logged("run_started"):
        started[str(line["run_key"])] = started.get(str(line["run_key"]), 0) + 1
    assert all(n == 1 for n in started.values()), f"a run submitted twice: {started}"
    assert set(started) <= {str(key) for key, _ in journal_runs}
    assert {p.name for p in (replicas.tmp / "runs").iterdir() if p.is_dir() and p.name != "pipelines"} == set(started)
    promotions = dict(replicas.rows("SELECT run_key, COUNT(*) FROM promotions GROUP BY run_key"))
    for key, state in journal_runs:
        expected = 1 if state == runs.RunState.SUCCEEDED else 0
        assert promotions.get(key, 0) == expected, f"run {key} ({state}): {promotions.get(key, 0)} promotion records"
    return journal_runs


def test_the_leader_killed_during_label_bursts_and_launches_loses_nothing_and_doubles_nothing(
    replicas: Replicas,
) -> None:
    rng = random.Random(19)
    data = replicas.tmp / "data"
    takeovers: list[float] = []
    phases: list[str] = []
    for i in range(KILLS):
        leader = replicas.leader()
        standby = replicas.other(leader)
        _, epoch, _ = replicas.lease()
        burst: threading.Thread | None = None
        if i % 5 == 4 or i == KILLS - 1:  # during a launch (the last kill always): once an intent is committed
            known = len(replicas.rows("SELECT run_key FROM runs"))
            wait_until(lambda: len(replicas.rows("SELECT run_key FROM runs")) > known, 300, "the next intent")  # noqa: B023
            time.sleep(rng.uniform(0, 0.5))
            phases.append("launch")
        else:  # during a burst of labels and images that the leader is journaling
            burst = threading.Thread(target=synthetic.generate, args=(data,), kwargs={"count": 12, "seed": i})
            burst.start()
            time.sleep(rng.uniform(0.05, 0.4))
            phases.append("burst")
        killed_at = time.monotonic()
        leader.kill()
        takeovers.append(_takeover(replicas, standby, epoch, killed_at))
        leader.start()  # as kubelet restarts a container: a standby now
        if burst is not None:
            burst.join(60)

    files = _files_on_disk(data)
    wait_until(
        lambda: {str(k) for (k,) in replicas.rows("SELECT DISTINCT key FROM events")} >= files,
        120,
        "every file journaled",
    )
    assert "launch" in phases, phases  # whatever KILLS is, one kill falls during a launch
    wait_until(
        lambda: all(runs.RunState(s).final for (s,) in replicas.rows("SELECT state FROM runs")),
        900,
        "every run to end",
    )
    stays(
        lambda: not any(not runs.RunState(s).final for (s,) in replicas.rows("SELECT state FROM runs")), 8, "no new run"
    )
    per_key = dict(replicas.rows("SELECT key, COUNT(*) FROM events WHERE key != 'data.yaml' GROUP BY key"))
    assert set(per_key) == files
    assert all(n == 1 for n in per_key.values()), {k: n for k, n in per_key.items() if n != 1}
    journal_runs = _check_runs(replicas)
    assert journal_runs, "no run was launched"
    assert replicas.rows("SELECT COUNT(*) FROM decisions WHERE epoch IS NULL") == [(0,)]
    limit = TTL_S + POLL_S + SLACK_S
    report = {
        "kills": KILLS,
        "phases": phases,
        "ttl_s": TTL_S,
        "takeover_s": [round(t, 3) for t in takeovers],
        "p50_s": round(statistics.median(takeovers), 3),
        "max_s": round(max(takeovers), 3),
        "runs": len(journal_runs),
    }
    (replicas.tmp / "failover.json").write_text(json.dumps(report, indent=2))
    print(f"\nfailover: {json.dumps({k: v for k, v in report.items() if k != 'phases'})}")
    assert max(takeovers) <= limit, report


def test_a_paused_leader_resumed_after_a_takeover_changes_nothing(replicas: Replicas) -> None:
    data = replicas.tmp / "data"
    paused = replicas.daemons["a"]
    assert paused.process is not None
    synthetic.generate(data, count=12, seed=1)
    wait_until(
        lambda: replicas.rows("SELECT state FROM runs") == [("running",)], 300, "a run the paused leader watches"
    )
    [(run_key,)] = replicas.rows("SELECT run_key FROM runs")
    stopped_at = time.time()
    os.kill(paused.process.pid, signal.SIGSTOP)  # a GC pause, a frozen VM, a partition
    _takeover(replicas, replicas.daemons["b"], 1, time.monotonic())
    # While it sleeps: the run ends and is recorded by the new leader; new data arrives and is decided on.
    wait_until(
        lambda: runs.RunState(replicas.rows("SELECT state FROM runs WHERE run_key = %s", run_key)[0][0]).final,
        600,
        "the run's outcome, recorded by the new leader",
    )
    synthetic.generate(data, count=12, seed=2)
    wait_until(lambda: len(replicas.rows("SELECT run_key FROM runs")) == 2, 120, "the new leader's next intent")
    os.kill(paused.process.pid, signal.SIGCONT)
    assert paused.process.wait(60) == leading.EXIT_LOST_LEADERSHIP
    assert paused.logged("leadership_lost")
    # Nothing of epoch 1 was written after the pause; the outcome and its promotion are the new leader's.
    for table, column in (("runs", "updated_at"), ("decisions", "at"), ("promotions", "at")):
        late = replicas.rows(f"SELECT COUNT(*) FROM {table} WHERE epoch = 1 AND {column} > %s", stopped_at)  # noqa: S608
        assert late == [(0,)], table
    assert replicas.rows("SELECT epoch FROM promotions WHERE run_key = %s", run_key) == [(2,)]
    assert replicas.rows("SELECT epoch FROM runs WHERE run_key = %s", run_key) == [(2,)]
    resumed = [
        line
        for line in paused.logged("run_started")
        if datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp() > stopped_at
    ]
    assert resumed == []
    wait_until(
        lambda: all(runs.RunState(s).final for (s,) in replicas.rows("SELECT state FROM runs")), 600, "the second run"
    )
    _check_runs(replicas)
