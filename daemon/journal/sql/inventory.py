"""Events, the inventory of every dataset, snapshots and dataset status, in SQL (SQLite or PostgreSQL).

An event is appended once (its id is deterministic) and moves the inventory: the present version of each
key, when it was first seen and last changed, whether it is deleted and how often. Each batch is one
transaction. A dataset's snapshot manifest is the sorted ``(key, version)`` list of its present labels and
images; its fingerprint is cached per dataset until the inventory changes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime

from daemon import errors
from daemon.engine import snapshots
from daemon.journal import base
from daemon.journal.sql import connection, times
from daemon.model import events

#: Inventory rows read per query while streaming a dataset.
PAGE = 1000

_MANIFEST = "SELECT key, version FROM inventory WHERE dataset = ? AND deleted = 0 AND item != 'other' ORDER BY key"


def present_manifest(db: connection.Connection, dataset: str) -> list[tuple[str, str]]:
    """The dataset's present labels and images as sorted ``(key, version)`` pairs: the one query for it."""
    return [(row["key"], row["version"]) for row in db.execute(_MANIFEST, (dataset,))]


def add_to_counter(db: connection.Connection, name: str, delta: int) -> None:
    """Move a running total inside the caller's transaction (schema 5's ``counters``)."""
    db.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = counters.value + ?",
        (name, delta, delta),
    )


class InventoryStore:
    """The events-and-inventory half of a journal (:mod:`daemon.journal.sqlite`, :mod:`daemon.journal.postgres`)."""

    database: connection.Database
    _fingerprints: dict[str, tuple[int, str | None, int]]

    def append_events(self, batch: Sequence[events.SourceEvent], *, received_at: datetime) -> base.AppendResult:
        new = duplicates = 0
        now = times.ts(received_at)
        with self.database.transaction(f"appending {len(batch)} events", acting=False) as db:
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
                    "ON CONFLICT (dataset) DO UPDATE SET change_seq = datasets.change_seq + 1",
                    (dataset,),
                )
            if new:
                add_to_counter(db, "events", new)
        return base.AppendResult(new=new, duplicates=duplicates)

    def _append_one(self, db: connection.Connection, event: events.SourceEvent, now: float) -> bool:
        row = db.execute(
            "SELECT version, deleted, deletions FROM inventory WHERE dataset = ? AND key = ?",
            (event.dataset, event.key),
        ).fetchone()
        deleting = event.kind is events.ChangeKind.DELETED
        if deleting:
            if row is None or row["deleted"]:
                return False  # nothing on record to delete
            version = event.version or row["version"]
        elif event.version is None:
            raise errors.InvalidInput(f"event for {event.dataset}/{event.key} has no version (etag or size)")
        else:
            version = event.version
        generation = row["deletions"] if row is not None else 0
        event_id = events.event_id(
            dataset=event.dataset, key=event.key, kind=event.kind, version=version, generation=generation
        )
        inserted = db.execute(
            "INSERT INTO events (id, source, dataset, key, kind, item, version, size, event_time, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                event_id,
                event.source.value,
                event.dataset,
                event.key,
                event.kind.value,
                event.item.value,
                version,
                event.size,
                times.ts(event.time),
                now,
            ),
        ).rowcount
        if not inserted:
            return False
        if row is not None and not row["deleted"] and row["version"] == version and not deleting:
            return True  # journaled (another source's view of it) but the inventory already has this version
        if deleting:
            db.execute(
                "UPDATE inventory SET deleted = 1, deletions = deletions + 1, changed_at = ? "
                "WHERE dataset = ? AND key = ?",
                (now, event.dataset, event.key),
            )
        else:
            counts = json.dumps(event.class_counts) if event.class_counts is not None else None
            db.execute(
                "INSERT INTO inventory (dataset, key, item, version, size, class_counts, first_seen, changed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (dataset, key) DO UPDATE SET item = excluded.item, version = excluded.version, "
                "size = excluded.size, class_counts = excluded.class_counts, changed_at = excluded.changed_at, "
                "deleted = 0",
                (event.dataset, event.key, event.item.value, version, event.size, counts, now, now),
            )
        return True

    def inventory(
        self, dataset: str, *, include_deleted: bool = False, after: str = ""
    ) -> Iterator[base.InventoryItem]:
        while True:
            with self.database.reading() as db:
                rows = db.execute(
                    "SELECT key, item, version, size, first_seen, changed_at, deleted FROM inventory "
                    "WHERE dataset = ? AND key > ? ORDER BY key LIMIT ?",
                    (dataset, after, PAGE),
                ).fetchall()
            for row in rows:
                if row["deleted"] and not include_deleted:
                    continue
                yield base.InventoryItem(
                    dataset=dataset,
                    key=row["key"],
                    item=events.ItemKind(row["item"]),
                    version=row["version"],
                    size=row["size"],
                    first_seen=times.dt(row["first_seen"]),
                    changed_at=times.dt(row["changed_at"]),
                    deleted=bool(row["deleted"]),
                )
            if len(rows) < PAGE:
                return
            after = rows[-1]["key"]

    def labels_without_counts(self, dataset: str, *, limit: int) -> list[tuple[str, str]]:
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT key, version FROM inventory WHERE dataset = ? AND item = 'label' AND deleted = 0 "
                "AND class_counts IS NULL ORDER BY key LIMIT ?",
                (dataset, limit),
            ).fetchall()
        return [(row["key"], row["version"]) for row in rows]

    def set_class_counts(self, dataset: str, found: Sequence[tuple[str, str, dict[str, int]]]) -> int:
        if not found:
            return 0
        with self.database.transaction(f"storing the class counts of {len(found)} label files") as db:
            return sum(
                db.execute(
                    "UPDATE inventory SET class_counts = ? WHERE dataset = ? AND key = ? AND version = ?",
                    (json.dumps(counts), dataset, key, version),
                ).rowcount
                for key, version, counts in found
            )

    def snapshot_histogram(self, dataset: str, fingerprint: str) -> dict[str, int] | None:
        manifest = self.snapshot_of(fingerprint)
        if manifest is None:
            return None
        histogram: dict[str, int] = {}
        with self.database.reading() as db:
            for key, version in manifest:
                row = db.execute(
                    "SELECT class_counts FROM inventory "
                    "WHERE dataset = ? AND key = ? AND version = ? AND item = 'label'",
                    (dataset, key, version),
                ).fetchone()
                for cls, n in json.loads(row["class_counts"] if row and row["class_counts"] else "{}").items():
                    histogram[cls] = histogram.get(cls, 0) + int(n)
        return histogram

    def snapshot_of(self, fingerprint: str) -> list[tuple[str, str]] | None:
        """The manifest a run trained on, as recorded with its intent."""
        with self.database.reading() as db:
            row = db.execute("SELECT manifest FROM snapshots WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None:
            return None
        return [(k, v) for k, v in json.loads(zlib.decompress(row["manifest"]))]

    def event_count(self) -> int:
        with self.database.reading() as db:
            row = db.execute("SELECT value FROM counters WHERE name = 'events'").fetchone()
            return int(row[0]) if row is not None else 0

    def snapshot_manifest(self, dataset: str) -> list[tuple[str, str]]:
        with self.database.reading() as db:
            return present_manifest(db, dataset)

    def _snapshot(self, dataset: str) -> tuple[str | None, int]:
        """The dataset's fingerprint, recomputed only when its inventory changed."""
        with self.database.reading() as db:
            row = db.execute("SELECT change_seq FROM datasets WHERE dataset = ?", (dataset,)).fetchone()
            change_seq = row["change_seq"] if row else 0
            cached = self._fingerprints.get(dataset)
            if cached is not None and cached[0] == change_seq:
                return cached[1], cached[2]
            manifest = present_manifest(db, dataset)
        fingerprint = snapshots.fingerprint(manifest)
        self._fingerprints[dataset] = (change_seq, fingerprint, len(manifest))
        return fingerprint, len(manifest)

    # --- dataset status ---------------------------------------------------------------------------
    def dataset_status(self, dataset: str) -> base.DatasetStatus:
        with self.database.reading() as db:
            row = db.execute(
                "SELECT source, problem, problem_at FROM datasets WHERE dataset = ?", (dataset,)
            ).fetchone()
        if row is None:
            return base.DatasetStatus(dataset=dataset)
        return base.DatasetStatus(
            dataset=dataset,
            source=row["source"],
            problem=row["problem"],
            problem_since=times.dt(row["problem_at"]) if row["problem_at"] is not None else None,
        )

    def set_dataset_status(self, dataset: str, *, source: str, problem: str | None, at: datetime) -> None:
        with self.database.transaction(f"recording the status of dataset {dataset}") as db:
            db.execute(
                "INSERT INTO datasets (dataset, change_seq, source, problem, problem_at) VALUES (?, 0, ?, ?, ?) "
                "ON CONFLICT (dataset) DO UPDATE SET source = excluded.source, problem = excluded.problem, "
                "problem_at = CASE WHEN excluded.problem IS NULL THEN NULL "
                "WHEN datasets.problem = excluded.problem THEN datasets.problem_at ELSE excluded.problem_at END",
                (dataset, source, problem, times.ts(at) if problem else None),
            )

    # --- clock ------------------------------------------------------------------------------------
    def latest_time(self) -> datetime | None:
        """The newest time the journal recorded (events received, inventory changes, runs created)."""
        with self.database.reading() as db:
            found = [
                db.execute("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1").fetchone(),
                db.execute("SELECT MAX(changed_at) FROM inventory").fetchone(),
                db.execute("SELECT MAX(created_at) FROM runs").fetchone(),
            ]
        values = [row[0] for row in found if row is not None and row[0] is not None]
        return times.dt(max(values)) if values else None

    def clamp_future(self, now: datetime) -> int:
        """Re-stamp times later than ``now`` to ``now`` (after the wall clock stepped back), so that quiet
        periods, waits and cooldowns run from a time that has happened. Returns how many rows moved."""
        at = times.ts(now)
        moved = 0
        # A re-stamped run carries this leader's epoch: its row may be an older leader's (whose node's clock ran
        # ahead), which the database's fence refuses to change under that older epoch.
        epoch = self.database.epoch
        with self.database.transaction("re-stamping times from the future") as db:
            for table, column in (("inventory", "changed_at"), ("inventory", "first_seen")):
                moved += db.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {column} > ?",  # noqa: S608 - constant names above
                    (at, at),
                ).rowcount
            moved += db.execute(
                "UPDATE runs SET created_at = ?, epoch = COALESCE(?, epoch) WHERE created_at > ?", (at, epoch, at)
            ).rowcount
            db.execute(
                "UPDATE runs SET updated_at = ?, epoch = COALESCE(?, epoch) WHERE updated_at > ?", (at, epoch, at)
            )
            db.execute("UPDATE signals SET at = ? WHERE at > ?", (at, at))
        self._fingerprints.clear()
        return moved
