"""Retention: history older than the cut-off that nothing needs is pruned; what rules see does not change."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from daemon.journal import base
from daemon.journal import sqlite as journal_sqlite
from daemon.model import decisions, events, runs
from daemon.runtime import pruning
from tests.support.sim import T0, Simulation, label, make_rule

DAY = timedelta(days=1)


def sweep(journal: base.Journal, *, before: object, window: int = 7, keep_decisions: int = 3) -> base.PruneStep:
    """Prune to the end, in small windows, and add up what went."""
    total = base.PruneStep()
    seq: int | None = 0
    steps = 0
    while True:
        step = journal.prune(before=before, from_seq=seq or 0, window=window, keep_decisions=keep_decisions)  # type: ignore[arg-type]
        steps += 1
        total += step
        seq = step.next_seq
        if seq is None and step.removed == 0:
            return total
        assert steps < 1000


def rows(sim: Simulation, table: str) -> int:
    with sim.journal.database.reading() as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


def churned(journal: base.Journal | None = None) -> Simulation:
    """Forty days of a rule's life: files written, rewritten and deleted, runs that consumed them, decisions."""
    sim = Simulation(rule=make_rule(min_new_labels=5, quiet_period="0s", cooldown="0s"))
    if journal is not None:
        sim.journal = journal
    for day in range(40):
        sim.now = T0 + day * DAY
        # Ten files rewritten every day: each day's version replaces the day before's.
        sim.drop(label(f"shelf{i}", version=f"d{day}", at=sim.now) for i in range(10))
        sim.drop([label(f"new{day}", at=sim.now)])  # one file that stays
        if day % 10 == 5:
            sim.drop([label(f"new{day - 5}", kind=events.ChangeKind.DELETED, at=sim.now)])
        decision = sim.step()
        if isinstance(decision, decisions.Launch):
            sim.finish(decision.run_key)
        for _ in range(3):  # skips: the rule waiting
            sim.journal.record_skip(
                decisions.Skip(rule="pets", code=decisions.SkipCode.NO_NEW_DATA, reason="nothing new"), at=sim.now
            )
    return sim


def test_pruning_keeps_what_rules_see_and_each_present_files_current_event(journal: base.Journal) -> None:
    sim = churned(journal)
    sim.now = T0 + 40 * DAY
    # Then new data that no run has consumed yet, 35 days ago and today: pending must survive pruning.
    sim.journal.append_events([label("late0", at=T0 + 5 * DAY)], received_at=T0 + 5 * DAY)
    sim.journal.append_events([label("late1", at=sim.now)], received_at=sim.now)
    before = sim.journal.rule_state(sim.rule, now=sim.now)
    manifest = sim.journal.snapshot_manifest("pets")
    events_before = sim.journal.event_count()
    assert events_before == rows(sim, "events") == 40 * 11 + 4 + 2
    decided = sim.journal.decisions("pets", limit=10_000)
    launches = [r for r in decided if r.outcome == "launch"]

    pruned = sweep(sim.journal, before=sim.now - 30 * DAY)

    after = sim.journal.rule_state(sim.rule, now=sim.now)
    assert after.pending == before.pending and after.pending.labels == 2  # late0 and late1
    assert (after.snapshot, after.snapshot_items) == (before.snapshot, before.snapshot_items)
    assert sim.journal.snapshot_manifest("pets") == manifest
    # Kept: every event of the last 30 days, and each present file's current version whatever its age.
    with sim.journal.database.reading() as db:
        kept = db.execute("SELECT key, version, received_at FROM events").fetchall()
    cutoff = (sim.now - 30 * DAY).timestamp()
    present = dict(manifest)
    old = [(row["key"], row["version"]) for row in kept if row["received_at"] < cutoff]
    assert old and all(present.get(key) == version for key, version in old)
    # Gone: rewritten versions and deleted files' events older than the cut-off, counted exactly.
    assert pruned.events == events_before - len(kept)
    assert sim.journal.event_count() == rows(sim, "events") == len(kept)
    # Before day 10: ten days of ten rewritten versions, and the file deleted on day 5 (its two events).
    assert pruned.events == 10 * 10 + 2
    # A replay of a kept event is still a duplicate; the inventory does not move.
    replay = sim.journal.append_events([label("new3", at=T0 + 3 * DAY)], received_at=sim.now)
    assert (replay.new, replay.duplicates) == (0, 1)
    # Decisions: launches stay, skips older than the cut-off go, the newest three stay whatever their age.
    kept_decisions = sim.journal.decisions("pets", limit=10_000)
    assert [r for r in kept_decisions if r.outcome == "launch"] == launches
    assert [r for r in kept_decisions if r.outcome == "skip"] == [
        r for r in decided if r.outcome == "skip" and r.at >= sim.now - 30 * DAY
    ]
    assert pruned.decisions == len(decided) - len(kept_decisions) > 0


def test_old_answered_signals_and_finished_notices_go_open_ones_stay(journal: base.Journal) -> None:
    sim = Simulation(rule=make_rule(min_new_labels=1, quiet_period="0s", cooldown="0s"), journal=journal)
    sim.drop([label("a")])
    answered = sim.journal.request_manual("pets", reason="old one", actor="test", at=T0)
    assert isinstance(sim.step(), decisions.Launch)  # answers the request
    sim.finish(sim.launches[0].run_key, runs.RunState.SUCCEEDED)
    sim.now = T0 + 40 * DAY
    still_open = sim.journal.request_manual("pets", reason="old, not answered yet", actor="test", at=T0 + DAY)
    sweep(sim.journal, before=sim.now - 30 * DAY)
    with sim.journal.database.reading() as db:
        ids = {row[0] for row in db.execute("SELECT id FROM signals")}
    assert answered not in ids and still_open in ids
    assert [r.actor for r in sim.journal.rule_state(sim.rule, now=sim.now).manual] == ["test"]


def test_nothing_newer_than_the_cut_off_is_touched(journal: base.Journal) -> None:
    sim = churned(journal)
    counts = {table: rows(sim, table) for table in ("events", "decisions", "signals", "inventory", "runs")}
    assert sweep(sim.journal, before=T0 - DAY).removed == 0
    assert {table: rows(sim, table) for table in counts} == counts


def test_a_journal_of_schema_4_gets_its_event_total_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = journal_sqlite.SqliteJournal(path)
    journal.append_events([label("a"), label("b"), label("c")], received_at=T0)
    journal.close()
    with contextlib.closing(sqlite3.connect(path)) as db:  # back to schema 4: no running total yet
        db.execute("DROP TABLE counters")
        db.execute("DROP INDEX inventory_uncounted")  # schema 6
        for table in ("runs", "decisions", "promotions"):  # schema 7
            db.execute(f"ALTER TABLE {table} DROP COLUMN epoch")
        db.execute("PRAGMA user_version = 4")
        db.commit()
    reopened = journal_sqlite.SqliteJournal(path)
    try:
        assert reopened.event_count() == 3
        reopened.append_events([label("d"), label("a")], received_at=T0)  # one new, one duplicate
        assert reopened.event_count() == 4
    finally:
        reopened.close()


def test_each_rule_keeps_its_newest_decisions_however_old(journal: base.Journal) -> None:
    sim = Simulation(rule=make_rule(), journal=journal)
    for rule in ("pets", "cats"):
        for i in range(10):
            code = (decisions.SkipCode.BELOW_THRESHOLD, decisions.SkipCode.QUIET_PERIOD)[i % 2]  # each one news
            skip = decisions.Skip(rule=rule, code=code, reason=f"{i}/20 new labels")
            sim.journal.record_skip(skip, at=T0 + i * timedelta(minutes=1))
    pruned = sweep(sim.journal, before=T0 + 40 * DAY, keep_decisions=3)
    for rule in ("pets", "cats"):
        assert [r.reason for r in sim.journal.decisions(rule)] == [
            "9/20 new labels",
            "8/20 new labels",
            "7/20 new labels",
        ]
    assert pruned.decisions == 2 * 7


def test_the_pruner_sweeps_in_small_steps_to_the_end_and_counts_by_table(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = churned()
    registry = CollectorRegistry()
    pruned = Counter("retrain_journal_pruned", "test", ["table"], registry=registry)
    monkeypatch.setattr(pruning, "WINDOW", 16)  # many steps over this small journal
    pruner = pruning.Pruner(journal=sim.journal, clock=lambda: T0 + 40 * DAY, retention=30 * DAY, pruned=pruned)
    expected = sweep(copy_of(sim).journal, before=T0 + 10 * DAY, keep_decisions=pruning.KEEP_DECISIONS)
    found = pruner.work()
    assert (found.events, found.decisions) == (expected.events, expected.decisions) == (102, expected.decisions)
    assert registry.get_sample_value("retrain_journal_pruned_total", {"table": "events"}) == 102
    assert pruner.work().removed == 0  # the next pass finds nothing more


def copy_of(sim: Simulation) -> Simulation:
    """The same journal content in a second in-memory journal (SQLite's backup API)."""
    twin = Simulation(rule=sim.rule, now=sim.now)
    with sim.journal.database.reading() as source, twin.journal.database.reading() as target:
        source.backup(target)
    return twin
