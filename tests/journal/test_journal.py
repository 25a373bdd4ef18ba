"""The journal on both backends (SQLite, PostgreSQL): idempotent appends, inventory, consumption, intents, run
states, crash safety."""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import errors
from daemon import journal as journals
from daemon.engine import deciding, snapshots
from daemon.journal import base, sqlite
from daemon.journal.sql import inventory
from daemon.model import decisions, events, ids, outcomes, runs, state
from tests.support.sim import T0, Simulation, label, make_rule

M = timedelta(minutes=1)


def test_the_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    with contextlib.closing(sqlite3.connect(journal.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    journal.close()


def test_append_is_idempotent_across_sources(journal: base.Journal) -> None:
    webhook = label("a", "etag1", source=events.Source.WEBHOOK)
    reconcile = label("a", "etag1", source=events.Source.S3_RECONCILE, kind=events.ChangeKind.CHANGED)
    assert journal.append_events([webhook], received_at=T0) == base.AppendResult(new=1, duplicates=0)
    assert journal.append_events([webhook, reconcile], received_at=T0) == base.AppendResult(new=0, duplicates=2)
    assert journal.event_count() == 1


def test_inventory_tracks_versions_and_deletes(journal: base.Journal) -> None:
    journal.append_events([label("a", "v1"), label("b", "v1")], received_at=T0)
    journal.append_events([label("a", "v2")], received_at=T0 + M)
    journal.append_events([label("b", kind=events.ChangeKind.DELETED)], received_at=T0 + 2 * M)
    items = {i.key: i for i in journal.inventory("pets", include_deleted=True)}
    assert items["labels/train/a.txt"].version == "v2"
    assert items["labels/train/a.txt"].changed_at == T0 + M
    assert items["labels/train/a.txt"].first_seen == T0
    assert items["labels/train/b.txt"].deleted
    assert [i.key for i in journal.inventory("pets")] == ["labels/train/a.txt"]
    # A repeated delete, or a delete of something never seen, is a duplicate.
    again = journal.append_events(
        [label("b", kind=events.ChangeKind.DELETED), label("zz", kind=events.ChangeKind.DELETED)], received_at=T0
    )
    assert again == base.AppendResult(new=0, duplicates=2)


def test_reupload_of_the_same_bytes_after_a_delete_is_a_new_event(journal: base.Journal) -> None:
    for batch in ([label("a", "v1")], [label("a", kind=events.ChangeKind.DELETED)], [label("a", "v1")]):
        assert journal.append_events(batch, received_at=T0).new == 1
    assert [i.key for i in journal.inventory("pets")] == ["labels/train/a.txt"]
    assert journal.append_events([label("a", "v1")], received_at=T0).new == 0


def test_inventory_streams_in_pages(journal: base.Journal) -> None:
    n = inventory.PAGE * 2 + 17
    journal.append_events([label(f"k{i:05d}", "v") for i in range(n)], received_at=T0)
    keys = [i.key for i in journal.inventory("pets")]
    assert len(keys) == n
    assert keys == sorted(keys)


def test_images_and_labels_are_told_apart() -> None:
    assert events.classify("labels/train/a.txt") is events.ItemKind.LABEL
    assert events.classify("images/val/a.JPG") is events.ItemKind.IMAGE
    assert events.classify("images/a.txt") is events.ItemKind.OTHER
    assert events.classify("labels/.a.txt") is events.ItemKind.OTHER
    assert events.classify("data.yaml") is events.ItemKind.OTHER


def test_pending_counts_and_class_histogram(journal: base.Journal) -> None:
    rule = make_rule()
    journal.append_events(
        [
            label("a", class_counts={"0": 2, "3": 1}),
            label("b", class_counts={"0": 1}),
            label("images/train/a.jpg"),
        ],
        received_at=T0,
    )
    st = journal.rule_state(rule, now=T0 + M)
    assert (st.pending.labels, st.pending.images) == (2, 1)
    assert dict(st.pending.class_counts) == {"0": 3, "3": 1}
    assert st.snapshot_items == 3
    assert st.snapshot == snapshots.fingerprint(journal.snapshot_manifest("pets"))


def test_intent_consumes_pending_data_and_refuses_a_second_time(journal: base.Journal) -> None:
    rule = make_rule(quiet_period="0s")
    journal.append_events([label("a"), label("b")], received_at=T0)
    launch = deciding.decide(rule, journal.rule_state(rule, now=T0), T0)
    assert isinstance(launch, decisions.Launch)
    assert journal.record_intent(launch, at=T0)
    assert not journal.record_intent(launch, at=T0 + M)
    st = journal.rule_state(rule, now=T0 + M)
    assert st.pending.labels == 0
    assert st.active_runs == (launch.run_key,)
    run = journal.get_run(launch.run_key)
    assert run is not None and run.state is runs.RunState.INTENDED
    assert journal.snapshot_of(launch.snapshot or "") == journal.snapshot_manifest("pets")
    # Another rule on the same dataset still sees the data as pending.
    other = make_rule(name="pets-weekly").model_copy(
        update={"dataset": rule.dataset.model_copy(update={"name": "pets"})}
    )
    assert journal.rule_state(other, now=T0).pending.labels == 2


def test_intent_is_refused_when_the_data_changed_since_the_decision(journal: base.Journal) -> None:
    rule = make_rule(quiet_period="0s")
    journal.append_events([label("a")], received_at=T0)
    launch = deciding.decide(rule, journal.rule_state(rule, now=T0), T0)
    assert isinstance(launch, decisions.Launch)
    journal.append_events([label("b")], received_at=T0)
    with pytest.raises(errors.TemporaryError, match="changed while run"):
        journal.record_intent(launch, at=T0)
    assert journal.get_run(launch.run_key) is None


def test_run_states_only_move_forward(journal: base.Journal) -> None:
    sim = Simulation(rule=make_rule(quiet_period="0s"), journal=journal)
    sim.drop([label("a")])
    sim.step()
    key = sim.launches[0].run_key
    journal.update_run(key, runs.RunState.SUBMITTED, at=T0, backend="local", backend_run_id="pid-1")
    journal.update_run(key, runs.RunState.RUNNING, at=T0 + M)
    done = journal.update_run(key, runs.RunState.SUCCEEDED, at=T0 + 2 * M, metrics={"map50_95": 0.41})
    assert (done.backend, done.backend_run_id, done.metrics) == ("local", "pid-1", {"map50_95": 0.41})
    with pytest.raises(errors.PermanentError, match="cannot move from succeeded to running"):
        journal.update_run(key, runs.RunState.RUNNING, at=T0)
    with pytest.raises(errors.PermanentError, match="no run"):
        journal.update_run(ids.RunKey("nope"), runs.RunState.RUNNING, at=T0)
    assert [r.run_key for r in journal.runs(rule="pets", states=frozenset({runs.RunState.SUCCEEDED}))] == [key]


def test_a_run_ends_with_its_promotion_record_or_not_at_all(journal: base.Journal) -> None:
    sim = Simulation(rule=make_rule(quiet_period="0s"), journal=journal)
    sim.drop([label("a")])
    sim.step()
    key = sim.launches[0].run_key
    record = base.PromotionRecord(
        model="pets-detector",
        version="1",
        previous_version=None,
        run_key=key,
        kind=outcomes.PromotionKind.PROMOTED,
        actor="daemon",
        reason="first model",
        metrics={"map50_95": 0.4},
        at=T0,
    )
    journal.update_run(key, runs.RunState.RUNNING, at=T0)
    journal.update_run(key, runs.RunState.SUCCEEDED, at=T0 + M, record=record)
    assert [p.run_key for p in journal.promotions("pets-detector")] == [key]
    # A refused move writes neither the state nor the record.
    with pytest.raises(errors.PermanentError):
        journal.update_run(key, runs.RunState.FAILED, at=T0 + 2 * M, record=record)
    assert len(journal.promotions("pets-detector")) == 1


def test_schedule_ticks_are_journaled_once(journal: base.Journal) -> None:
    assert journal.record_tick("pets", trigger_index=1, slot=T0, at=T0)
    assert not journal.record_tick("pets", trigger_index=1, slot=T0, at=T0 + M)
    [tick] = journal.rule_state(make_rule(), now=T0).ticks
    assert tick.slot == T0


def test_a_newer_observation_supersedes_an_unanswered_one(journal: base.Journal) -> None:
    journal.record_observation("pets", kind="class_drift", trigger_index=1, value=0.1, at=T0)
    newest = journal.record_observation("pets", kind="class_drift", trigger_index=1, value=0.3, at=T0 + M)
    [obs] = journal.rule_state(make_rule(), now=T0 + M).observations
    assert (obs.id, obs.value) == (newest, 0.3)


def test_decision_history_records_changes_not_repeats(journal: base.Journal) -> None:
    sim = Simulation(rule=make_rule(min_new_labels=3, quiet_period="5m"), journal=journal)
    sim.drop([label("a")])
    for _ in range(5):
        sim.step()
        sim.advance(M)
    sim.drop([label("b"), label("c")])
    sim.step()
    sim.advance(6 * M)
    sim.step()
    history = [(d.outcome, d.code) for d in journal.decisions("pets")]
    assert history == [("launch", "new_labels"), ("skip", "quiet_period"), ("skip", "below_threshold")]
    assert journal.decisions("pets")[0].run_key == sim.launches[0].run_key


def test_promotions_are_recorded(journal: base.Journal) -> None:
    record = base.PromotionRecord(
        model="pets-detector",
        version="2",
        previous_version="1",
        run_key="pets-d1",
        kind=outcomes.PromotionKind.PROMOTED,
        actor="daemon",
        reason="0.41 > 0.40 + 0.005",
        metrics={"map50_95": 0.41},
        at=T0,
    )
    journal.record_promotion(record)
    assert journal.promotions("pets-detector") == [record]


def test_a_pause_is_journaled_survives_a_reopen_and_follows_a_rename(target: str) -> None:
    journal = journals.open_target(target)
    rule = make_rule()
    assert journal.pause_of("pets") is None and journal.rule_state(rule, now=T0).paused is None
    pause = state.Pause(actor="ops", reason="camera swap", at=T0)
    assert journal.set_pause("pets", pause)
    assert not journal.set_pause("pets", state.Pause(actor="other", reason="again", at=T0 + M))  # the first stays
    journal.close()
    journal = journals.open_target(target)
    assert journal.pause_of("pets") == pause and journal.rule_state(rule, now=T0).paused == pause
    assert journal.has_history("pets")
    assert journal.rename_rule("pets", "pets-v2") and journal.pause_of("pets-v2") == pause
    assert journal.set_pause("pets-v2", None) and journal.pause_of("pets-v2") is None
    assert not journal.set_pause("pets-v2", None)
    journal.close()


def test_a_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    sqlite.SqliteJournal(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
        db.commit()
    with pytest.raises(errors.PermanentError, match="newer than this daemon"):
        sqlite.SqliteJournal(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(errors.PermanentError, match="cannot open the journal"):
        sqlite.SqliteJournal(path)


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from daemon import journal as journals
    from daemon.model import events

    journal = journals.open_target(sys.argv[1])
    now = datetime(2026, 11, 23, tzinfo=UTC)
    for b in range(100000):
        batch = [
            events.SourceEvent(source=events.Source.FOLDER, dataset="d", key=f"labels/{b}/{i}.txt",
                               kind=events.ChangeKind.CREATED, item=events.ItemKind.LABEL,
                               version=f"{b}:{i}", size=10, time=now)
            for i in range(200)
        ]
        journal.append_events(batch, received_at=now)
        print(b, flush=True)
    """
)


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_mid_batch_leaves_every_committed_batch_and_no_partial_one(target: str, seed: int) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, target], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    assert writer.stdout is not None
    batches = random.Random(seed).randint(3, 12)
    committed = []
    for line in writer.stdout:
        committed.append(int(line))
        if len(committed) >= batches:
            break
    time.sleep(random.Random(seed).uniform(0, 0.05))  # land somewhere inside the next batch
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    if not target.startswith("postgresql://"):
        with contextlib.closing(sqlite3.connect(target)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened = journals.open_target(target)
    per_batch: dict[str, int] = {}
    for item in reopened.inventory("d"):
        batch = item.key.split("/")[1]
        per_batch[batch] = per_batch.get(batch, 0) + 1
    for b in committed:
        assert per_batch.get(str(b)) == 200
    assert all(count == 200 for count in per_batch.values())
    assert reopened.event_count() == 200 * len(per_batch)
    reopened.close()
