"""What a rule sees and what it decided, in SQL: pending data, intents, skips, signals, renames.

A run's intent is one transaction with the snapshot it trains on, the data it consumes (``consumed``) and
the ticks, observations and requests it answers (``signals.answered_by``), so the same data never launches
twice. A skip is history only when it says something new.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from daemon import errors
from daemon.engine import snapshots
from daemon.journal import base
from daemon.journal.sql import connection, inventory, times
from daemon.model import decisions, events, ids, rules, runs, state

#: Triggers whose runs are keyed by the data they train on (a schedule slot or a drift observation has its own).
_DATA_TRIGGERS = (decisions.TriggerKind.NEW_LABELS, decisions.TriggerKind.CLASS_DRIFT, decisions.TriggerKind.MANUAL)
#: Tables whose rows belong to a rule by name (moved by :meth:`RuleStore.rename_rule`).
_BY_RULE = ("consumed", "runs", "decisions", "signals", "rule_pauses")
#: Tables whose rows belong to a dataset by name (moved with a rule whose dataset was named after it).
_BY_DATASET = ("events", "inventory", "datasets", "consumed", "snapshots")


def signal_id(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]


def same_gist(previous: str, current: str) -> bool:
    """Two skip reasons say the same thing if they differ only in their figures (ages, counts)."""
    strip = str.maketrans("", "", "0123456789")
    return previous.translate(strip) == current.translate(strip)


# The inventory items a rule has not consumed in their present version (parameters: rule, dataset), counted
# by kind, and their labels' boxes summed by class (SQLite's ``json_each`` over each label's class counts).
_PENDING_BY_ITEM = (
    "SELECT i.item, COUNT(*), MIN(i.changed_at), MAX(i.changed_at) FROM inventory i "
    "LEFT JOIN consumed c ON c.rule = ? AND c.dataset = i.dataset AND c.key = i.key "
    "WHERE i.dataset = ? AND i.deleted = 0 AND i.item != 'other' AND (c.version IS NULL OR c.version != i.version) "
    "GROUP BY i.item"
)
_PENDING_LABELS = (
    "LEFT JOIN consumed c ON c.rule = ? AND c.dataset = i.dataset AND c.key = i.key "
    "WHERE i.dataset = ? AND i.deleted = 0 AND i.item = 'label' AND (c.version IS NULL OR c.version != i.version) "
    "GROUP BY j.key"
)
#: ... by dialect: SQLite's ``json_each``, PostgreSQL's ``jsonb_each_text`` (the column is JSON text in both).
_PENDING_BY_CLASS: dict[connection.Dialect, str] = {
    "sqlite": f"SELECT j.key, SUM(j.value) FROM inventory i, json_each(i.class_counts) j {_PENDING_LABELS}",  # noqa: S608 - constants
    "postgres": "SELECT j.key, SUM(j.value::bigint) FROM inventory i "  # noqa: S608 - constants
    f"CROSS JOIN LATERAL jsonb_each_text(i.class_counts::jsonb) j {_PENDING_LABELS}",
}


class RuleStore:
    """The rules half of a journal (:mod:`daemon.journal.sqlite`, :mod:`daemon.journal.postgres`)."""

    database: connection.Database
    _fingerprints: dict[str, tuple[int, str | None, int]]

    # Provided by InventoryStore, beside which this store is mixed into the journal.
    _snapshot: Callable[[str], tuple[str | None, int]]
    dataset_status: Callable[[str], base.DatasetStatus]

    def _pending(self, db: connection.Connection, rule: str, dataset: str) -> state.PendingData:
        # Aggregated by the database (class counts through its JSON functions): a rule with 100k pending files is
        # decided on without 100k rows crossing into Python at every pass of the loop.
        labels = images = 0
        first: float | None = None
        last: float | None = None
        for row in db.execute(_PENDING_BY_ITEM, (rule, dataset)):
            if row[0] == events.ItemKind.LABEL:
                labels += row[1]
            else:
                images += row[1]
            first = row[2] if first is None else min(first, row[2])
            last = row[3] if last is None else max(last, row[3])
        counts: dict[str, int] = {}
        if labels:
            for cls, n in db.execute(_PENDING_BY_CLASS[self.database.dialect], (rule, dataset)):
                counts[str(cls)] = int(n)
        deleted = db.execute(
            "SELECT COUNT(*) FROM inventory i JOIN consumed c ON c.rule = ? AND c.dataset = i.dataset "
            "AND c.key = i.key WHERE i.dataset = ? AND i.deleted = 1",
            (rule, dataset),
        ).fetchone()[0]
        return state.PendingData(
            labels=labels,
            images=images,
            deleted=int(deleted),
            class_counts=counts,
            first_at=times.dt(first) if first is not None else None,
            last_at=times.dt(last) if last is not None else None,
        )

    def rule_state(self, rule: rules.Rule, *, now: datetime) -> state.RuleState:
        fingerprint, items = self._snapshot(rule.dataset_name)
        status = self.dataset_status(rule.dataset_name)
        day_ago = times.ts(now - timedelta(days=1))
        with self.database.reading() as db:
            pending = self._pending(db, rule.name, rule.dataset_name)
            active = [
                ids.RunKey(row["run_key"])
                for row in db.execute(
                    "SELECT run_key FROM runs WHERE rule = ? AND state IN (?, ?, ?) ORDER BY created_at",
                    (rule.name, *sorted(s.value for s in runs.ACTIVE)),
                )
            ]
            launches = [
                row["created_at"]
                for row in db.execute(
                    "SELECT created_at FROM runs WHERE rule = ? ORDER BY created_at DESC LIMIT 1000", (rule.name,)
                )
            ]
            snapshot_run = None
            if fingerprint is not None:
                found = db.execute(
                    "SELECT run_key, state FROM runs WHERE rule = ? AND snapshot = ? AND trigger IN (?, ?, ?) "
                    "ORDER BY created_at DESC LIMIT 1",
                    (rule.name, fingerprint, *_DATA_TRIGGERS),
                ).fetchone()
                if found is not None:
                    snapshot_run = (ids.RunKey(found["run_key"]), runs.RunState(found["state"]))
            signals = db.execute(
                "SELECT id, kind, trigger_index, slot, value, detail, actor, at FROM signals "
                "WHERE rule = ? AND answered_by IS NULL ORDER BY COALESCE(slot, at), at, id",
                (rule.name,),
            ).fetchall()
        ticks, observations, manual = [], [], []
        for row in signals:
            if row["kind"] == decisions.TriggerKind.SCHEDULE:
                ticks.append(state.Tick(id=row["id"], trigger_index=row["trigger_index"], slot=times.dt(row["slot"])))
            elif row["kind"] == decisions.TriggerKind.MANUAL:
                manual.append(
                    state.ManualRequest(
                        id=row["id"], reason=row["detail"], actor=row["actor"] or "unknown", at=times.dt(row["at"])
                    )
                )
            else:
                observations.append(
                    state.Observation(
                        id=row["id"],
                        kind=row["kind"],
                        trigger_index=row["trigger_index"],
                        value=row["value"],
                        at=times.dt(row["at"]),
                        detail=row["detail"],
                    )
                )
        return state.RuleState(
            pending=pending,
            snapshot=fingerprint,
            snapshot_items=items,
            dataset_problem=status.problem,
            active_runs=tuple(active),
            last_launch_at=times.dt(launches[0]) if launches else None,
            launches_last_day=tuple(times.dt(t) for t in sorted(t for t in launches if t > day_ago)),
            snapshot_run=snapshot_run,
            ticks=tuple(ticks),
            observations=tuple(observations),
            manual=tuple(manual),
            paused=self.pause_of(rule.name),
        )

    # --- decisions ---------------------------------------------------------------------------------
    def _record_decision(
        self, db: connection.Connection, decision: decisions.Decision, at: float, run_key: str | None
    ) -> None:
        code = decision.code.value if isinstance(decision, decisions.Skip) else decision.trigger.value
        if isinstance(decision, decisions.Skip):
            last = db.execute(
                "SELECT outcome, code, reason FROM decisions WHERE rule = ? ORDER BY id DESC LIMIT 1",
                (decision.rule,),
            ).fetchone()
            # A skip is history only when it says something new: the same wait every tick is not news.
            if (
                last is not None
                and last["outcome"] == decisions.Outcome.SKIP
                and last["code"] == code
                and same_gist(last["reason"], decision.reason)
            ):
                return
        db.execute(
            "INSERT INTO decisions (rule, at, outcome, code, reason, numbers, run_key, epoch) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                decision.rule,
                at,
                decision.outcome.value,
                code,
                decision.reason,
                json.dumps(decision.numbers),
                run_key,
                self.database.epoch,
            ),
        )

    def _answer(self, db: connection.Connection, rule: str, ids_: Sequence[str], answered_by: str) -> None:
        db.executemany(
            "UPDATE signals SET answered_by = ? WHERE id = ? AND rule = ? AND answered_by IS NULL",
            [(answered_by, sid, rule) for sid in ids_],
        )

    def record_intent(self, launch: decisions.Launch, *, at: datetime) -> bool:
        now = times.ts(at)
        dataset = str(launch.params.get("dataset", {}).get("name", launch.rule))
        with self.database.transaction(f"recording the intent of run {launch.run_key}") as db:
            if db.execute("SELECT 1 FROM runs WHERE run_key = ?", (launch.run_key,)).fetchone():
                return False
            db.execute(
                "INSERT INTO runs (run_key, rule, state, trigger, reason, snapshot, params, created_at, updated_at, "
                "epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    launch.run_key,
                    launch.rule,
                    runs.RunState.INTENDED.value,
                    launch.trigger.value,
                    launch.reason,
                    launch.snapshot,
                    json.dumps(launch.params),
                    now,
                    now,
                    self.database.epoch,
                ),
            )
            if launch.snapshot is not None:
                manifest = inventory.present_manifest(db, dataset)
                if snapshots.fingerprint(manifest) != launch.snapshot:
                    raise errors.TemporaryError(
                        f"dataset {dataset} changed while run {launch.run_key} was being decided; will decide again"
                    )
                db.execute(
                    "INSERT INTO snapshots (fingerprint, dataset, items, manifest) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (launch.snapshot, dataset, len(manifest), zlib.compress(json.dumps(manifest).encode())),
                )
            # Everything present now is consumed by this run; deleted items are forgotten.
            db.execute(
                "INSERT INTO consumed (rule, dataset, key, version, run_key) "
                "SELECT ?, dataset, key, version, ? FROM inventory WHERE dataset = ? AND deleted = 0 "
                "ON CONFLICT (rule, dataset, key) DO UPDATE SET version = excluded.version, run_key = excluded.run_key",
                (launch.rule, launch.run_key, dataset),
            )
            db.execute(
                "DELETE FROM consumed WHERE rule = ? AND dataset = ? AND key IN "
                "(SELECT key FROM inventory WHERE dataset = ? AND deleted = 1)",
                (launch.rule, dataset, dataset),
            )
            self._answer(db, launch.rule, launch.acknowledges, launch.run_key)
            self._record_decision(db, launch, now, launch.run_key)
        return True

    def record_skip(self, skip: decisions.Skip, *, at: datetime) -> None:
        with self.database.transaction(f"recording a decision of rule {skip.rule}") as db:
            self._answer(db, skip.rule, skip.acknowledges, f"skip:{skip.code.value}")
            self._record_decision(db, skip, times.ts(at), None)

    def decisions(self, rule: str, *, limit: int = 20) -> list[base.DecisionRecord]:
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT rule, at, outcome, code, reason, numbers, run_key FROM decisions WHERE rule = ? "
                "ORDER BY id DESC LIMIT ?",
                (rule, limit),
            ).fetchall()
        return [
            base.DecisionRecord(
                rule=row["rule"],
                at=times.dt(row["at"]),
                outcome=decisions.Outcome(row["outcome"]),
                code=row["code"],
                reason=row["reason"],
                numbers=json.loads(row["numbers"]),
                run_key=row["run_key"],
            )
            for row in rows
        ]

    # --- ticks, observations, manual requests -----------------------------------------------------
    def record_tick(self, rule: str, *, trigger_index: int, slot: datetime, at: datetime) -> bool:
        sid = signal_id("schedule", rule, trigger_index, times.ts(slot))
        with self.database.transaction(f"recording a schedule slot of rule {rule}") as db:
            return bool(
                db.execute(
                    "INSERT INTO signals (id, rule, kind, trigger_index, slot, at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (sid, rule, "schedule", trigger_index, times.ts(slot), times.ts(at)),
                ).rowcount
            )

    def record_observation(
        self, rule: str, *, kind: str, trigger_index: int, value: float, at: datetime, detail: str = ""
    ) -> str:
        sid = signal_id(kind, rule, trigger_index, times.ts(at))
        with self.database.transaction(f"recording a {kind} observation of rule {rule}") as db:
            # Only the newest measurement matters: older unanswered ones are superseded.
            db.execute(
                "UPDATE signals SET answered_by = ? WHERE rule = ? AND kind = ? AND trigger_index = ? "
                "AND answered_by IS NULL",
                (f"superseded:{sid}", rule, kind, trigger_index),
            )
            db.execute(
                "INSERT INTO signals (id, rule, kind, trigger_index, value, detail, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sid, rule, kind, trigger_index, value, detail, times.ts(at)),
            )
        return sid

    def request_manual(self, rule: str, *, reason: str, actor: str, at: datetime) -> str:
        sid = signal_id("manual", rule, actor, times.ts(at))
        with self.database.transaction(f"recording a manual trigger of rule {rule}", acting=False) as db:
            db.execute(
                "INSERT INTO signals (id, rule, kind, trigger_index, detail, actor, at) "
                "VALUES (?, ?, 'manual', -1, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sid, rule, reason, actor, times.ts(at)),
            )
        return sid

    def set_pause(self, rule: str, pause: state.Pause | None) -> bool:
        with self.database.transaction(f"{'pausing' if pause else 'resuming'} rule {rule}", acting=False) as db:
            if pause is None:
                return db.execute("DELETE FROM rule_pauses WHERE rule = ?", (rule,)).rowcount > 0
            return (
                db.execute(
                    "INSERT INTO rule_pauses (rule, actor, reason, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (rule, pause.actor, pause.reason, times.ts(pause.at)),
                ).rowcount
                > 0
            )

    def pause_of(self, rule: str) -> state.Pause | None:
        with self.database.reading() as db:
            row = db.execute("SELECT actor, reason, at FROM rule_pauses WHERE rule = ?", (rule,)).fetchone()
        return None if row is None else state.Pause(actor=row["actor"], reason=row["reason"], at=times.dt(row["at"]))

    # --- identity ---------------------------------------------------------------------------------
    def has_history(self, rule: str) -> bool:
        with self.database.reading() as db:
            return any(
                db.execute(f"SELECT 1 FROM {table} WHERE rule = ? LIMIT 1", (rule,)).fetchone()  # noqa: S608
                for table in _BY_RULE
            )

    def rename_rule(self, old: str, new: str, *, datasets: tuple[str, str] | None = None) -> bool:
        """Move ``old``'s history (consumed data, runs, decisions, open signals) to ``new``, once: only while
        ``new`` has none of its own. With ``datasets=(before, after)``, the dataset named after the old rule
        moves too (events, inventory, snapshots), unless ``after`` already has data. Returns whether
        anything moved."""
        with self.database.transaction(f"renaming rule {old} to {new}") as db:
            if any(
                db.execute(f"SELECT 1 FROM {table} WHERE rule = ? LIMIT 1", (new,)).fetchone()  # noqa: S608
                for table in _BY_RULE
            ):
                return False
            moved = sum(
                db.execute(f"UPDATE {table} SET rule = ? WHERE rule = ?", (new, old)).rowcount  # noqa: S608
                for table in _BY_RULE
            )
            if datasets is not None and datasets[0] != datasets[1]:
                before, after = datasets
                if not db.execute("SELECT 1 FROM inventory WHERE dataset = ? LIMIT 1", (after,)).fetchone():
                    for table in _BY_DATASET:
                        moved += db.execute(
                            f"UPDATE {table} SET dataset = ? WHERE dataset = ?",  # noqa: S608
                            (after, before),
                        ).rowcount
        self._fingerprints.clear()
        return moved > 0
