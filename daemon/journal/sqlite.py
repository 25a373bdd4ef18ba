"""The SQLite journal: one file in WAL mode on a local disk (or a ReadWriteOnce volume).

WAL lets ``retrain explain`` and ``retrain status`` read while the daemon writes. ``synchronous=FULL``
makes every commit durable. Each public method is one transaction, so a SIGKILL leaves either the whole
batch or none of it. One connection is shared by the daemon's threads behind a lock: writes are short,
and SQLite allows one writer at a time anyway.

Times are stored as UTC epoch seconds (REAL) and returned as aware datetimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon import errors
from daemon.engine import snapshots
from daemon.journal import base
from daemon.model import decisions, events, ids, rules, runs, state

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory (
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    item TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER,
    class_counts TEXT,
    first_seen REAL NOT NULL,
    changed_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deletions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT PRIMARY KEY,
    change_seq INTEGER NOT NULL
);
-- What each rule's runs have consumed: an inventory item is pending for a rule while its version differs.
CREATE TABLE IF NOT EXISTS consumed (
    rule TEXT NOT NULL,
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    run_key TEXT NOT NULL,
    PRIMARY KEY (rule, dataset, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    fingerprint TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    items INTEGER NOT NULL,
    manifest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    trigger TEXT NOT NULL,
    reason TEXT NOT NULL,
    snapshot TEXT,
    params TEXT NOT NULL,
    backend TEXT,
    backend_run_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    promotion TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_rule ON runs (rule, created_at);
CREATE INDEX IF NOT EXISTS runs_by_snapshot ON runs (rule, snapshot);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    numbers TEXT NOT NULL,
    run_key TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_rule ON decisions (rule, id);
-- Schedule ticks, drift observations and manual requests: things a decision answers (consumes).
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    trigger_index INTEGER NOT NULL,
    slot REAL,
    value REAL,
    detail TEXT NOT NULL DEFAULT '',
    actor TEXT,
    at REAL NOT NULL,
    answered_by TEXT
);
CREATE INDEX IF NOT EXISTS open_signals ON signals (rule, answered_by);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT,
    previous_version TEXT,
    run_key TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    at REAL NOT NULL
);
"""

#: Inventory rows read per query while streaming a dataset.
PAGE = 1000


def _ts(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("journal times must be aware datetimes")
    return moment.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def _signal_id(*parts: object) -> str:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:32]


class SqliteJournal(base.Journal):
    """The journal in one SQLite file.

    Args:
        path: the database file (created with its folder), or ``":memory:"`` for a throwaway journal.
        busy_timeout_s: how long to wait for another connection's write lock.

    Raises:
        errors.PermanentError: the file is not a journal, or one written by a newer version.
        errors.TemporaryError: the file cannot be opened right now.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._fingerprints: dict[str, tuple[int, str | None, int]] = {}
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise errors.PermanentError(f"cannot open the journal {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise errors.PermanentError(
                f"the journal {self.path} has schema {version}, newer than this daemon's {SCHEMA_VERSION}: "
                "upgrade the daemon"
            )
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. SQLite failures become :class:`~daemon.errors.TemporaryError`: the
        caller keeps its input (a webhook answers 503, a source retries) and nothing half-done remains."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise errors.TemporaryError(f"journal {self.path} cannot be written: {exc}; will retry") from exc
            try:
                yield self._db
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise errors.TemporaryError(f"journal {self.path} write failed: {exc}; will retry") from exc
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise errors.TemporaryError(f"journal {self.path} commit failed: {exc}; will retry") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def writable(self) -> bool:
        """True when a write transaction can be opened now (the readiness probe asks this)."""
        try:
            with self._transaction() as db:
                db.execute("SELECT 1")
        except (errors.RetrainError, sqlite3.Error):
            return False
        return True

    # --- events and inventory ---------------------------------------------------------------------
    def append_events(self, batch: Sequence[events.SourceEvent], *, received_at: datetime) -> base.AppendResult:
        new = duplicates = 0
        now = _ts(received_at)
        with self._transaction() as db:
            touched: set[str] = set()
            for event in batch:
                if self._append_one(db, event, now):
                    new += 1
                    touched.add(event.dataset)
                else:
                    duplicates += 1
            for dataset in touched:
                db.execute(
                    "INSERT INTO datasets (dataset, change_seq) VALUES (?, 1) "
                    "ON CONFLICT (dataset) DO UPDATE SET change_seq = change_seq + 1",
                    (dataset,),
                )
        return base.AppendResult(new=new, duplicates=duplicates)

    def _append_one(self, db: sqlite3.Connection, event: events.SourceEvent, now: float) -> bool:
        row = db.execute(
            "SELECT version, deleted, deletions FROM inventory WHERE dataset = ? AND key = ?",
            (event.dataset, event.key),
        ).fetchone()
        deleting = event.kind is events.ChangeKind.DELETED
        if deleting:
            if row is None or row[1]:
                return False  # nothing on record to delete
            version = event.version or row[0]
            generation = row[2]
        else:
            if event.version is None:
                raise errors.InvalidInput(f"event for {event.dataset}/{event.key} has no version (etag or size)")
            version = event.version
            generation = row[2] if row is not None else 0
        event_id = events.event_id(
            dataset=event.dataset, key=event.key, kind=event.kind, version=version, generation=generation
        )
        inserted = db.execute(
            "INSERT OR IGNORE INTO events "
            "(id, source, dataset, key, kind, item, version, size, event_time, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                event.source.value,
                event.dataset,
                event.key,
                event.kind.value,
                event.item.value,
                version,
                event.size,
                _ts(event.time),
                now,
            ),
        ).rowcount
        if not inserted:
            return False
        if row is not None and not row[1] and row[0] == version and not deleting:
            return True  # journaled (another source's view of it) but the inventory already has this version
        counts = json.dumps(event.class_counts) if event.class_counts is not None else None
        if deleting:
            db.execute(
                "UPDATE inventory SET deleted = 1, deletions = deletions + 1, changed_at = ? "
                "WHERE dataset = ? AND key = ?",
                (now, event.dataset, event.key),
            )
        else:
            db.execute(
                "INSERT INTO inventory (dataset, key, item, version, size, class_counts, first_seen, changed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dataset, key) DO UPDATE SET item = excluded.item, version = excluded.version, "
                "size = excluded.size, class_counts = excluded.class_counts, changed_at = excluded.changed_at, "
                "deleted = 0",
                (event.dataset, event.key, event.item.value, version, event.size, counts, now, now),
            )
        return True

    def inventory(self, dataset: str, *, include_deleted: bool = False) -> Iterator[base.InventoryItem]:
        after = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT key, item, version, size, first_seen, changed_at, deleted FROM inventory "
                    "WHERE dataset = ? AND key > ? ORDER BY key LIMIT ?",
                    (dataset, after, PAGE),
                ).fetchall()
            for key, item, version, size, first_seen, changed_at, deleted in rows:
                if deleted and not include_deleted:
                    continue
                yield base.InventoryItem(
                    dataset=dataset,
                    key=key,
                    item=events.ItemKind(item),
                    version=version,
                    size=size,
                    first_seen=_dt(first_seen),
                    changed_at=_dt(changed_at),
                    deleted=bool(deleted),
                )
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def labels_without_counts(self, dataset: str, *, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, version FROM inventory WHERE dataset = ? AND item = 'label' AND deleted = 0 "
                "AND class_counts IS NULL ORDER BY key LIMIT ?",
                (dataset, limit),
            ).fetchall()
        return [(k, v) for k, v in rows]

    def set_class_counts(self, dataset: str, key: str, *, version: str, counts: dict[str, int]) -> bool:
        with self._transaction() as db:
            return bool(
                db.execute(
                    "UPDATE inventory SET class_counts = ? WHERE dataset = ? AND key = ? AND version = ?",
                    (json.dumps(counts), dataset, key, version),
                ).rowcount
            )

    def snapshot_histogram(self, dataset: str, fingerprint: str) -> dict[str, int] | None:
        manifest = self.snapshot_of(fingerprint)
        if manifest is None:
            return None
        histogram: dict[str, int] = {}
        with self._lock:
            for key, version in manifest:
                row = self._db.execute(
                    "SELECT class_counts FROM inventory "
                    "WHERE dataset = ? AND key = ? AND version = ? AND item = 'label'",
                    (dataset, key, version),
                ).fetchone()
                for cls, n in json.loads(row[0] if row and row[0] else "{}").items():
                    histogram[cls] = histogram.get(cls, 0) + int(n)
        return histogram

    def event_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def run_counts(self) -> dict[str, int]:
        with self._lock:
            return {str(k): int(n) for k, n in self._db.execute("SELECT state, COUNT(*) FROM runs GROUP BY state")}

    # --- what a rule sees -------------------------------------------------------------------------
    def snapshot_manifest(self, dataset: str) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, version FROM inventory WHERE dataset = ? AND deleted = 0 AND item != 'other' ORDER BY key",
                (dataset,),
            ).fetchall()
        return [(key, version) for key, version in rows]

    def _snapshot(self, dataset: str) -> tuple[str | None, int]:
        """The dataset's fingerprint, recomputed only when its inventory changed."""
        with self._lock:
            row = self._db.execute("SELECT change_seq FROM datasets WHERE dataset = ?", (dataset,)).fetchone()
            change_seq = row[0] if row else 0
            cached = self._fingerprints.get(dataset)
            if cached is not None and cached[0] == change_seq:
                return cached[1], cached[2]
            manifest = self.snapshot_manifest(dataset)
            fingerprint = snapshots.fingerprint(manifest)
            self._fingerprints[dataset] = (change_seq, fingerprint, len(manifest))
            return fingerprint, len(manifest)

    def _pending(self, db: sqlite3.Connection, rule: str, dataset: str) -> state.PendingData:
        rows = db.execute(
            "SELECT i.item, i.changed_at, i.class_counts FROM inventory i "
            "LEFT JOIN consumed c ON c.rule = ? AND c.dataset = i.dataset AND c.key = i.key "
            "WHERE i.dataset = ? AND i.deleted = 0 AND i.item != 'other' "
            "AND (c.version IS NULL OR c.version != i.version)",
            (rule, dataset),
        ).fetchall()
        labels = images = 0
        counts: dict[str, int] = {}
        times: list[float] = []
        for item, changed_at, class_counts in rows:
            times.append(changed_at)
            if item == events.ItemKind.LABEL:
                labels += 1
                for cls, n in json.loads(class_counts or "{}").items():
                    counts[cls] = counts.get(cls, 0) + int(n)
            else:
                images += 1
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
            first_at=_dt(min(times)) if times else None,
            last_at=_dt(max(times)) if times else None,
        )

    def rule_state(self, rule: rules.Rule, *, now: datetime) -> state.RuleState:
        fingerprint, items = self._snapshot(rule.dataset_name)
        day_ago = _ts(now - timedelta(days=1))
        with self._lock:
            db = self._db
            pending = self._pending(db, rule.name, rule.dataset_name)
            active = [
                ids.RunKey(r[0])
                for r in db.execute(
                    "SELECT run_key FROM runs WHERE rule = ? AND state IN (?, ?, ?) ORDER BY created_at",
                    (rule.name, *sorted(s.value for s in runs.ACTIVE)),
                )
            ]
            launches = [
                r[0]
                for r in db.execute(
                    "SELECT created_at FROM runs WHERE rule = ? ORDER BY created_at DESC LIMIT 1000",
                    (rule.name,),
                )
            ]
            snapshot_run = None
            if fingerprint is not None:
                key = snapshots.data_run_key(rule.name, fingerprint)
                found = db.execute("SELECT state FROM runs WHERE run_key = ?", (key,)).fetchone()
                if found is not None:
                    snapshot_run = (key, runs.RunState(found[0]))
            signals = db.execute(
                "SELECT id, kind, trigger_index, slot, value, detail, actor, at FROM signals "
                "WHERE rule = ? AND answered_by IS NULL ORDER BY COALESCE(slot, at), at, id",
                (rule.name,),
            ).fetchall()
        ticks, observations, manual = [], [], []
        for sid, kind, index, slot, value, detail, actor, at in signals:
            if kind == "schedule":
                ticks.append(state.Tick(id=sid, trigger_index=index, slot=_dt(slot)))
            elif kind == "manual":
                manual.append(state.ManualRequest(id=sid, reason=detail, actor=actor or "unknown", at=_dt(at)))
            else:
                observations.append(
                    state.Observation(id=sid, kind=kind, trigger_index=index, value=value, at=_dt(at), detail=detail)
                )
        return state.RuleState(
            pending=pending,
            snapshot=fingerprint,
            snapshot_items=items,
            active_runs=tuple(active),
            last_launch_at=_dt(launches[0]) if launches else None,
            launches_last_day=tuple(_dt(t) for t in sorted(t for t in launches if t > day_ago)),
            snapshot_run=snapshot_run,
            ticks=tuple(ticks),
            observations=tuple(observations),
            manual=tuple(manual),
        )

    # --- decisions and runs -----------------------------------------------------------------------
    def _record_decision(
        self, db: sqlite3.Connection, decision: decisions.Decision, at: float, run_key: str | None
    ) -> None:
        code = decision.code.value if isinstance(decision, decisions.Skip) else decision.trigger
        if isinstance(decision, decisions.Skip):
            last = db.execute(
                "SELECT outcome, code, reason FROM decisions WHERE rule = ? ORDER BY id DESC LIMIT 1",
                (decision.rule,),
            ).fetchone()
            # A skip is history only when it says something new: the same wait every tick is not news.
            if last is not None and last[0] == "skip" and last[1] == code and _same_gist(last[2], decision.reason):
                return
        db.execute(
            "INSERT INTO decisions (rule, at, outcome, code, reason, numbers, run_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                decision.rule,
                at,
                decision.outcome,
                code,
                decision.reason,
                json.dumps(decision.numbers),
                run_key,
            ),
        )

    def _answer(self, db: sqlite3.Connection, rule: str, ids_: Sequence[str], answered_by: str) -> None:
        db.executemany(
            "UPDATE signals SET answered_by = ? WHERE id = ? AND rule = ? AND answered_by IS NULL",
            [(answered_by, sid, rule) for sid in ids_],
        )

    def record_intent(self, launch: decisions.Launch, *, at: datetime) -> bool:
        now = _ts(at)
        dataset = str(launch.params.get("dataset", {}).get("name", launch.rule))
        with self._transaction() as db:
            exists = db.execute("SELECT 1 FROM runs WHERE run_key = ?", (launch.run_key,)).fetchone()
            if exists:
                return False
            db.execute(
                "INSERT INTO runs (run_key, rule, state, trigger, reason, snapshot, params, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    launch.run_key,
                    launch.rule,
                    runs.RunState.INTENDED.value,
                    launch.trigger,
                    launch.reason,
                    launch.snapshot,
                    json.dumps(launch.params),
                    now,
                    now,
                ),
            )
            if launch.snapshot is not None:
                manifest = [
                    (k, v)
                    for k, v in db.execute(
                        "SELECT key, version FROM inventory WHERE dataset = ? AND deleted = 0 AND item != 'other' "
                        "ORDER BY key",
                        (dataset,),
                    )
                ]
                if snapshots.fingerprint(manifest) != launch.snapshot:
                    raise errors.TemporaryError(
                        f"dataset {dataset} changed while run {launch.run_key} was being decided; will decide again"
                    )
                db.execute(
                    "INSERT OR IGNORE INTO snapshots (fingerprint, dataset, items, manifest) VALUES (?, ?, ?, ?)",
                    (launch.snapshot, dataset, len(manifest), zlib.compress(json.dumps(manifest).encode())),
                )
            # Everything present now is consumed by this run; deleted items are forgotten.
            db.execute(
                "INSERT OR REPLACE INTO consumed (rule, dataset, key, version, run_key) "
                "SELECT ?, dataset, key, version, ? FROM inventory WHERE dataset = ? AND deleted = 0",
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
        with self._transaction() as db:
            self._answer(db, skip.rule, skip.acknowledges, f"skip:{skip.code.value}")
            self._record_decision(db, skip, _ts(at), None)

    def decisions(self, rule: str, *, limit: int = 20) -> list[base.DecisionRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, at, outcome, code, reason, numbers, run_key FROM decisions WHERE rule = ? "
                "ORDER BY id DESC LIMIT ?",
                (rule, limit),
            ).fetchall()
        return [
            base.DecisionRecord(
                rule=r[0],
                at=_dt(r[1]),
                outcome=r[2],
                code=r[3],
                reason=r[4],
                numbers=json.loads(r[5]),
                run_key=r[6],
            )
            for r in rows
        ]

    def snapshot_of(self, fingerprint: str) -> list[tuple[str, str]] | None:
        """The manifest a run trained on, as recorded with its intent."""
        with self._lock:
            row = self._db.execute("SELECT manifest FROM snapshots WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            return None
        return [(k, v) for k, v in json.loads(zlib.decompress(row[0]))]

    # Queries below interpolate only this constant column list; values always go through placeholders.
    _RUN_COLUMNS = (
        "run_key, rule, state, trigger, reason, snapshot, params, backend, backend_run_id, created_at, "
        "updated_at, metrics, promotion, error"
    )

    @staticmethod
    def _run(row: Sequence[Any]) -> runs.RunRecord:
        return runs.RunRecord(
            run_key=ids.RunKey(row[0]),
            rule=row[1],
            state=runs.RunState(row[2]),
            trigger=row[3],
            reason=row[4],
            snapshot=row[5],
            params=json.loads(row[6]),
            backend=row[7],
            backend_run_id=row[8],
            created_at=_dt(row[9]),
            updated_at=_dt(row[10]),
            metrics=json.loads(row[11]),
            promotion=json.loads(row[12]),
            error=row[13],
        )

    def update_run(
        self,
        run_key: ids.RunKey,
        new_state: runs.RunState,
        *,
        at: datetime,
        backend: str | None = None,
        backend_run_id: str | None = None,
        metrics: dict[str, Any] | None = None,
        promotion: dict[str, Any] | None = None,
        error: str | None = None,
        record: base.PromotionRecord | None = None,
    ) -> runs.RunRecord:
        with self._transaction() as db:
            row = db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_key = ?", (run_key,)).fetchone()  # noqa: S608
            if row is None:
                raise errors.PermanentError(f"no run {run_key} in the journal")
            current = self._run(row)
            if new_state != current.state and new_state not in runs.TRANSITIONS[current.state]:
                raise errors.PermanentError(f"run {run_key} cannot move from {current.state} to {new_state}")
            db.execute(
                "UPDATE runs SET state = ?, updated_at = ?, backend = COALESCE(?, backend), "
                "backend_run_id = COALESCE(?, backend_run_id), metrics = ?, promotion = ?, "
                "error = COALESCE(?, error) WHERE run_key = ?",
                (
                    new_state.value,
                    _ts(at),
                    backend,
                    backend_run_id,
                    json.dumps({**current.metrics, **(metrics or {})}),
                    json.dumps({**current.promotion, **(promotion or {})}),
                    error,
                    run_key,
                ),
            )
            if record is not None:
                self._insert_promotion(db, record)
            updated = db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_key = ?", (run_key,)).fetchone()  # noqa: S608
        return self._run(updated)

    def get_run(self, run_key: ids.RunKey) -> runs.RunRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_key = ?", (run_key,)).fetchone()  # noqa: S608
        return self._run(row) if row is not None else None

    def runs(
        self, *, rule: str | None = None, states: frozenset[runs.RunState] | None = None, limit: int = 100
    ) -> list[runs.RunRecord]:
        query = f"SELECT {self._RUN_COLUMNS} FROM runs WHERE 1 = 1"  # noqa: S608
        args: list[Any] = []
        if rule is not None:
            query += " AND rule = ?"
            args.append(rule)
        if states is not None:
            query += f" AND state IN ({', '.join('?' for _ in states)})"
            args.extend(sorted(s.value for s in states))
        query += " ORDER BY created_at DESC, run_key LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [self._run(r) for r in rows]

    # --- ticks, observations, manual requests -----------------------------------------------------
    def record_tick(self, rule: str, *, trigger_index: int, slot: datetime, at: datetime) -> bool:
        sid = _signal_id("schedule", rule, trigger_index, _ts(slot))
        with self._transaction() as db:
            return bool(
                db.execute(
                    "INSERT OR IGNORE INTO signals (id, rule, kind, trigger_index, slot, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (sid, rule, "schedule", trigger_index, _ts(slot), _ts(at)),
                ).rowcount
            )

    def record_observation(
        self, rule: str, *, kind: str, trigger_index: int, value: float, at: datetime, detail: str = ""
    ) -> str:
        sid = _signal_id(kind, rule, trigger_index, _ts(at))
        with self._transaction() as db:
            # Only the newest measurement matters: older unanswered ones are superseded.
            db.execute(
                "UPDATE signals SET answered_by = ? WHERE rule = ? AND kind = ? AND trigger_index = ? "
                "AND answered_by IS NULL",
                (f"superseded:{sid}", rule, kind, trigger_index),
            )
            db.execute(
                "INSERT OR IGNORE INTO signals (id, rule, kind, trigger_index, value, detail, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, rule, kind, trigger_index, value, detail, _ts(at)),
            )
        return sid

    def request_manual(self, rule: str, *, reason: str, actor: str, at: datetime) -> str:
        sid = _signal_id("manual", rule, actor, _ts(at))
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO signals (id, rule, kind, trigger_index, detail, actor, at) "
                "VALUES (?, ?, 'manual', -1, ?, ?, ?)",
                (sid, rule, reason, actor, _ts(at)),
            )
        return sid

    # --- promotions -------------------------------------------------------------------------------
    def record_promotion(self, record: base.PromotionRecord) -> None:
        with self._transaction() as db:
            self._insert_promotion(db, record)

    @staticmethod
    def _insert_promotion(db: sqlite3.Connection, record: base.PromotionRecord) -> None:
        db.execute(
            "INSERT INTO promotions (model, version, previous_version, run_key, kind, actor, reason, metrics, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.model,
                record.version,
                record.previous_version,
                record.run_key,
                record.kind,
                record.actor,
                record.reason,
                json.dumps(record.metrics),
                _ts(record.at),
            ),
        )

    def promotions(self, model: str | None = None, *, limit: int = 20) -> list[base.PromotionRecord]:
        query = "SELECT model, version, previous_version, run_key, kind, actor, reason, metrics, at FROM promotions"
        args: list[Any] = []
        if model is not None:
            query += " WHERE model = ?"
            args.append(model)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [
            base.PromotionRecord(
                model=r[0],
                version=r[1],
                previous_version=r[2],
                run_key=r[3],
                kind=r[4],
                actor=r[5],
                reason=r[6],
                metrics=json.loads(r[7]),
                at=_dt(r[8]),
            )
            for r in rows
        ]


def _same_gist(previous: str, current: str) -> bool:
    """Two skip reasons say the same thing if they differ only in their figures (ages, counts)."""
    strip = str.maketrans("", "", "0123456789")
    return previous.translate(strip) == current.translate(strip)
