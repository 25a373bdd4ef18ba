"""The PostgreSQL journal's own guarantees, on a real server: the leader's lease, fencing by epoch, migrations
by several processes at once, a server that never answers, and no password in any message."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from daemon import errors
from daemon.engine import deciding
from daemon.journal import base, postgres
from daemon.journal.postgres import database
from daemon.model import decisions, ids, outcomes, runs
from tests.support import services
from tests.support.sim import T0, label, make_rule

TTL = 1.0


@pytest.fixture
def url(postgres_server: services.PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture
def pair(url: str) -> Iterator[tuple[postgres.PostgresJournal, postgres.PostgresJournal]]:
    a, b = postgres.PostgresJournal(url), postgres.PostgresJournal(url)
    yield a, b
    a.close()
    b.close()


def _launch(journal: base.Journal, now: datetime = T0) -> decisions.Launch:
    rule = make_rule(quiet_period="0s")
    launch = deciding.decide(rule, journal.rule_state(rule, now=now), now)
    assert isinstance(launch, decisions.Launch)
    return launch


def _record(run_key: str) -> base.PromotionRecord:
    return base.PromotionRecord(
        model="pets-detector",
        version="1",
        previous_version=None,
        run_key=run_key,
        kind=outcomes.PromotionKind.PROMOTED,
        actor="daemon",
        reason="first model",
        metrics={},
        at=T0,
    )


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def test_one_leader_at_a_time_and_the_epoch_goes_up_at_each_takeover(
    pair: tuple[postgres.PostgresJournal, postgres.PostgresJournal],
) -> None:
    a, b = pair
    assert a.leadership().acquire("a", ttl_s=TTL) == 1
    assert b.leadership().acquire("b", ttl_s=TTL) is None  # held
    assert a.leadership().renew("a", epoch=1, ttl_s=TTL)
    state = b.leadership().current()
    assert (state.holder, state.epoch, state.renewals, state.expired) == ("a", 1, 1, False)
    time.sleep(TTL + 0.3)  # a stops renewing: its lease runs out by the database's clock
    assert b.leadership().acquire("b", ttl_s=TTL) == 2
    assert not a.leadership().renew("a", epoch=1, ttl_s=TTL)  # taken over: the renewal says so
    b.leadership().release("b", epoch=2)
    assert a.leadership().acquire("a", ttl_s=TTL) == 3  # given up on a clean stop: taken at once


def test_a_standby_journals_events_and_manual_requests_but_its_acting_writes_are_refused(
    pair: tuple[postgres.PostgresJournal, postgres.PostgresJournal],
) -> None:
    leader, standby = pair
    assert leader.leadership().acquire("pod-a", ttl_s=30) == 1
    assert standby.leadership().acquire("pod-b", ttl_s=30) is None
    assert standby.append_events([label("a")], received_at=T0).new == 1  # the webhook on a standby loses nothing
    standby.request_manual("pets", reason="ops", actor="me", at=T0)
    launch = _launch(standby)
    with pytest.raises(errors.NotLeader, match="standby; the leader is pod-a") as caught:
        standby.record_intent(launch, at=T0)
    assert caught.value.leader == "pod-a" and not caught.value.fenced
    assert standby.get_run(launch.run_key) is None
    with pytest.raises(errors.NotLeader):
        standby.assert_leader()
    assert leader.record_intent(launch, at=T0)  # the leader acts on what the standby journaled
    leader.assert_leader()
    assert _rows(standby.pg.connector.conninfo, "SELECT epoch FROM runs") == [(1,)]


def test_a_leader_that_lost_its_lease_changes_nothing(
    pair: tuple[postgres.PostgresJournal, postgres.PostgresJournal], url: str
) -> None:
    old, new = pair
    assert old.leadership().acquire("old", ttl_s=TTL) == 1
    old.append_events([label("a")], received_at=T0)
    launch = _launch(old)
    assert old.record_intent(launch, at=T0)
    old.update_run(launch.run_key, runs.RunState.RUNNING, at=T0)
    time.sleep(TTL + 0.3)  # paused past its lease (GC, SIGSTOP, a partition)
    assert new.leadership().acquire("new", ttl_s=30) == 2
    before = _rows(url, "SELECT state, epoch FROM runs")
    # Its own clock says the lease ran out: refused before it asks the database.
    with pytest.raises(errors.NotLeader, match="ran out on this replica's clock") as caught:
        old.update_run(launch.run_key, runs.RunState.SUCCEEDED, at=T0, record=_record(launch.run_key))
    assert caught.value.fenced and old.pg.fence.lost.is_set()
    # Believing it still leads (its clock fooled), the lease row refuses it under the writers' lock ...
    old.pg.fence.hold(1, valid_until=time.monotonic() + 60)
    with pytest.raises(errors.NotLeader, match="epoch 2 holds the lease"):
        old.record_promotion(_record(launch.run_key))
    # ... and bypassing every check in the process, the database's trigger refuses a row of epoch 1.
    with (
        pytest.raises(psycopg.Error, match="write of epoch 1 refused: epoch 2 holds the lease") as refused,
        psycopg.connect(url) as raw,
    ):
        raw.execute("UPDATE runs SET state = 'succeeded', epoch = 1")
    assert refused.value.sqlstate == database.STALE_EPOCH
    assert _rows(url, "SELECT state, epoch FROM runs") == before == [("running", 1)]
    assert _rows(url, "SELECT COUNT(*) FROM promotions") == [(0,)]
    # The new leader finishes the run with its epoch.
    new.update_run(launch.run_key, runs.RunState.SUCCEEDED, at=T0, record=_record(launch.run_key))
    assert _rows(url, "SELECT state, epoch FROM runs") == [("succeeded", 2)]
    assert _rows(url, "SELECT epoch FROM promotions") == [(2,)]
    assert new.get_run(ids.RunKey(launch.run_key)) is not None


def test_a_new_leader_whose_clock_is_behind_re_stamps_the_old_leaders_runs(
    pair: tuple[postgres.PostgresJournal, postgres.PostgresJournal], url: str
) -> None:
    old, new = pair
    assert old.leadership().acquire("old", ttl_s=TTL) == 1
    ahead = T0 + timedelta(minutes=5)  # the old leader's node ran 5 minutes ahead
    old.append_events([label("a")], received_at=ahead)
    launch = _launch(old, ahead)
    assert old.record_intent(launch, at=ahead)
    time.sleep(TTL + 0.3)
    assert new.leadership().acquire("new", ttl_s=30) == 2
    # The old epoch's run is in this replica's future: re-stamping it is the leader's write, not refused.
    assert new.clamp_future(T0) >= 1
    assert _rows(url, "SELECT epoch FROM runs") == [(2,)]
    run = new.get_run(ids.RunKey(launch.run_key))
    assert run is not None and run.created_at == T0


def test_taking_the_lease_waits_for_a_write_of_the_old_epoch_in_flight(
    pair: tuple[postgres.PostgresJournal, postgres.PostgresJournal], url: str
) -> None:
    """No write of the old epoch commits after the new epoch exists: both take the writers' advisory lock."""
    old, new = pair
    old.leadership().acquire("old", ttl_s=TTL)
    old.append_events([label("a")], received_at=T0)
    launch = _launch(old)
    inside, release = threading.Event(), threading.Event()
    took: list[int | None] = []

    def take_over() -> None:
        inside.wait(10)
        time.sleep(TTL + 0.2)  # expired now, while the old leader's transaction is still open
        took.append(new.leadership().acquire("new", ttl_s=30))
        release.set()

    thread = threading.Thread(target=take_over)
    thread.start()
    with old.pg.transaction("a slow intent") as db:
        db.execute("UPDATE probe SET at = 1 WHERE id = 1")
        inside.set()
        release.wait(TTL + 1.5)  # the takeover cannot complete while this holds the writers' lock
        assert not release.is_set()
    thread.join(10)
    assert took == [2]
    with pytest.raises(errors.NotLeader):
        old.record_intent(launch, at=T0)


def test_processes_opening_a_new_database_at_once_migrate_it_once(postgres_server: services.PostgresServer) -> None:
    script = "import sys\nfrom daemon.journal import postgres\npostgres.PostgresJournal(sys.argv[1]).close()\n"
    for _ in range(3):
        url = postgres_server.create_database()
        openers = [
            subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True) for _ in range(5)
        ]
        failures = [err for p in openers if (err := p.communicate(timeout=120)[1]) and p.returncode != 0]
        assert failures == [], failures[0][-600:]
        newest = database.migrations()[-1]
        assert _rows(url, "SELECT version, name FROM schema_version") == [newest[:2]]


def test_a_newer_schema_is_refused(url: str) -> None:
    postgres.PostgresJournal(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    with pytest.raises(errors.PermanentError, match="newer than this daemon's"):
        postgres.PostgresJournal(url)


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.faults
def test_a_server_that_never_answers_is_a_temporary_error_in_seconds_without_the_password() -> None:
    with _silent_server() as port:
        url = f"postgresql://retrain:s3cret-pw@127.0.0.1:{port}/journal"
        began = time.monotonic()
        with pytest.raises(errors.TemporaryError) as caught:
            postgres.PostgresJournal(url, connect_timeout_s=2)
        assert time.monotonic() - began < 10
    message = str(caught.value)
    assert f"postgresql://retrain@127.0.0.1:{port}/journal" in message
    assert "s3cret-pw" not in message and "will retry" in message


def test_descriptions_never_carry_the_password() -> None:
    assert database.describe("postgresql://u:pw@db.svc:5432/j") == "postgresql://u@db.svc:5432/j"
    assert "pw" not in database.describe("host=db.svc user=u password=pw dbname=j")
    assert "pw" not in database.describe("postgresql://u@db/j?password=pw")


def test_a_pending_class_histogram_is_summed_by_the_database(url: str) -> None:
    journal = postgres.PostgresJournal(url)
    try:
        journal.append_events([label(f"k{i}", class_counts={"0": i, "7": 1}) for i in range(50)], received_at=T0)
        pending = journal.rule_state(make_rule(), now=T0).pending
        assert dict(pending.class_counts) == {"0": sum(range(50)), "7": 50}
    finally:
        journal.close()


def test_the_suite_runs_a_real_server(postgres_server: services.PostgresServer, tmp_path: Path) -> None:
    [(version,)] = _rows(postgres_server.url(), "SHOW server_version")
    assert str(version).startswith("16")
