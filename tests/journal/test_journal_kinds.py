"""The journal's failures by kind, on real volumes: a full disk and a read-only volume are reported (and the
input kept), a constraint violation is a bug and never retried (both backends), a 0.1 journal is migrated,
a renamed rule keeps its history, and times from the future are brought back after the clock stepped back
(both backends)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import errors
from daemon import journal as journals
from daemon.engine import deciding
from daemon.journal import base, postgres, sqlite
from daemon.journal.sqlite import database
from daemon.model import decisions, ids, runs
from tests.support import volumes
from tests.support.sim import T0, Simulation, label, make_rule

M = timedelta(minutes=1)


@pytest.mark.faults
def test_a_full_disk_refuses_the_batch_whole_and_is_reported_until_space_returns(tmp_path: Path) -> None:
    with volumes.tmpfs(tmp_path / "vol", size="8m") as vol:
        journal = sqlite.SqliteJournal(vol / "journal.db", min_free_bytes=64 * 1024)
        try:
            assert journal.health() is None
            journal.append_events([label("a")], received_at=T0)
            filler = volumes.fill(vol)
            problem = journal.health()
            assert problem is not None and "bytes free" in problem
            batch = [label(f"big{i:05d}", "v" * 100) for i in range(2000)]
            with pytest.raises(errors.JournalUnwritable, match="disk is full") as caught:
                journal.append_events(batch, received_at=T0)
            assert isinstance(caught.value, errors.TemporaryError)  # the caller keeps its input and retries
            assert journal.event_count() == 1  # all of the batch or none of it
            filler.unlink()
            assert journal.health() is None
            assert journal.append_events(batch, received_at=T0).new == 2000
        finally:
            journal.close()


@pytest.mark.faults
def test_a_journal_on_a_read_only_volume_is_refused_with_the_cause(tmp_path: Path) -> None:
    """A journal volume mounted read-only (a ReadOnlyMany claim, ``readOnly: true``): a clear error at open."""
    with volumes.tmpfs(tmp_path / "vol", size="4m") as vol:
        sqlite.SqliteJournal(vol / "journal.db").close()
        view = tmp_path / "read-only"
        with volumes.read_only_view(vol, view):
            with pytest.raises(errors.JournalUnwritable, match="read-only") as caught:
                sqlite.SqliteJournal(view / "journal.db").append_events([label("a")], received_at=T0)
            assert "free space or fix the volume" in str(caught.value)


def test_a_constraint_violation_is_a_bug_not_a_busy_database(target: str) -> None:
    journal = journals.open_target(target)
    assert isinstance(journal, sqlite.SqliteJournal | postgres.PostgresJournal)
    try:
        with (
            pytest.raises(errors.JournalBug, match="violated a constraint") as caught,
            journal.database.transaction("inserting a run twice") as db,
        ):
            for _ in range(2):
                db.execute(
                    "INSERT INTO runs (run_key, rule, state, trigger, reason, params, created_at, updated_at) "
                    "VALUES ('k', 'r', 'intended', 'manual', '', '{}', 0, 0)"
                )
        assert not isinstance(caught.value, errors.TemporaryError)
        assert journal.get_run(ids.RunKey("k")) is None  # rolled back whole
    finally:
        journal.close()


@pytest.mark.faults
def test_another_writer_holding_the_lock_is_temporary(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = sqlite.SqliteJournal(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(errors.TemporaryError, match="busy") as caught:
            journal.append_events([label("a")], received_at=T0)
        assert not isinstance(caught.value, errors.JournalUnwritable)
    finally:
        other.execute("ROLLBACK")
        other.close()
        journal.close()


def test_a_journal_of_version_0_1_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    [(version, _, first)] = [m for m in database.migrations() if m[0] == 1]
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement in database.statements(first):
            db.execute(statement)
        db.execute(
            "INSERT INTO runs (run_key, rule, state, trigger, reason, params, created_at, updated_at) "
            "VALUES ('pets-d1', 'pets', 'succeeded', 'new_labels', 'old', '{}', 1, 1)"
        )
        db.execute(f"PRAGMA user_version = {version}")
        db.commit()
    journal = sqlite.SqliteJournal(path)
    try:
        assert journal.get_run(ids.RunKey("pets-d1")) is not None
        assert journal.health() is None  # the probe table of version 2 exists
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == database.migrations()[-1][0]
    finally:
        journal.close()


def test_statements_are_split_where_sqlite_says_not_at_every_semicolon() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');\nINSERT INTO t VALUES ('x;y');\n"
    assert database.statements(sql) == [
        "-- a comment; with a semicolon\nCREATE TABLE t (a TEXT DEFAULT ';');",
        "INSERT INTO t VALUES ('x;y');",
    ]


def test_a_renamed_rule_keeps_its_consumed_data_cooldown_and_runs(journal: base.Journal) -> None:
    sim = Simulation(make_rule(name="pets", quiet_period="0s", cooldown="1h"), journal=journal)
    sim.drop([label("a"), label("b")])
    launch = sim.step()
    assert isinstance(launch, decisions.Launch)
    # Renamed, its dataset (named after the rule, as no dataset.name is set) renamed with it.
    renamed = make_rule(name="pets-v2", quiet_period="0s", cooldown="1h")
    assert renamed.dataset_name == "pets-v2"
    assert sim.journal.rename_rule("pets", "pets-v2", datasets=("pets", "pets-v2"))
    sim.rule = renamed
    sim.advance(M)
    again = sim.step()
    assert isinstance(again, decisions.Skip)
    assert again.code is decisions.SkipCode.NO_NEW_DATA  # what `pets` consumed is consumed for `pets-v2`
    sim.drop([label("c", dataset="pets-v2")])
    busy = sim.step()
    assert isinstance(busy, decisions.Skip) and busy.code is decisions.SkipCode.CONCURRENCY  # its run is ours
    sim.finish(launch.run_key)
    cooling = sim.step()
    assert isinstance(cooling, decisions.Skip) and cooling.code is decisions.SkipCode.COOLDOWN
    assert not sim.journal.rename_rule("pets", "pets-v2")  # once only: the new name has history now


def test_times_from_the_future_are_brought_back_to_now(journal: base.Journal) -> None:
    rule = make_rule(quiet_period="10m", max_wait="1h", cooldown="0s")
    sim = Simulation(rule, journal=journal)
    ahead = T0 + timedelta(days=1)  # the clock was a day ahead while these arrived
    sim.journal.append_events([label("a")], received_at=ahead)
    assert sim.journal.latest_time() == ahead
    moved = sim.journal.clamp_future(T0)
    assert moved >= 2
    sim.now = T0 + timedelta(minutes=11)
    decision = deciding.decide(rule, sim.journal.rule_state(rule, now=sim.now), sim.now)
    assert isinstance(decision, decisions.Launch), decision


def test_a_dataset_problem_stops_its_rules_until_cleared(journal: base.Journal) -> None:
    sim = Simulation(make_rule(quiet_period="0s"), journal=journal)
    sim.drop([label("a")])
    sim.journal.set_dataset_status("pets", source="s3://datasets/pets/", problem="S3 endpoint not set", at=T0)
    decision = sim.step()
    assert isinstance(decision, decisions.Skip) and decision.code is decisions.SkipCode.DATASET_UNAVAILABLE
    assert "S3 endpoint not set" in decision.reason
    status = sim.journal.dataset_status("pets")
    assert (status.source, status.problem_since) == ("s3://datasets/pets/", T0)
    sim.journal.set_dataset_status("pets", source="s3://datasets/pets/", problem=None, at=T0)
    assert isinstance(sim.step(), decisions.Launch)
    assert runs.RunState.INTENDED  # the launch was journaled as an intent


@pytest.mark.faults
def test_processes_opening_a_new_journal_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The daemon and a command (`retrain trigger`, `status`) may open a journal that is not migrated yet at
    the same moment: each migration must re-read the schema version under the write lock, or the second
    opener applies 0002 again ("duplicate column name: source", seen in CI)."""
    script = (
        "import sys\n"
        "from daemon.journal.sqlite import database\n"
        "database.Database(sys.argv[1], busy_timeout_s=30).db.close()\n"
    )
    for attempt in range(6):
        path = tmp_path / f"journal-{attempt}.db"
        openers = [
            subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        failures = [err for p in openers if (err := p.communicate(timeout=120)[1]) and p.returncode != 0]
        assert failures == [], failures[0][-600:]
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == database.migrations()[-1][0]
