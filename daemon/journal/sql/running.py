"""Runs and promotions in SQL: states only move forward, and a run's outcome lands with its promotion
record in one transaction."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from daemon import errors
from daemon.journal import base
from daemon.journal.sql import connection, noticing, times
from daemon.model import ids, notices, outcomes, runs

_RUN = (
    "SELECT run_key, rule, state, trigger, reason, snapshot, params, backend, backend_run_id, created_at, "
    "updated_at, metrics, promotion, error FROM runs"
)
_PROMOTION = "SELECT model, version, previous_version, run_key, kind, actor, reason, metrics, at FROM promotions"


def _run(row: Any) -> runs.RunRecord:
    return runs.RunRecord(
        run_key=ids.RunKey(row["run_key"]),
        rule=row["rule"],
        state=runs.RunState(row["state"]),
        trigger=row["trigger"],
        reason=row["reason"],
        snapshot=row["snapshot"],
        params=json.loads(row["params"]),
        backend=row["backend"],
        backend_run_id=row["backend_run_id"],
        created_at=times.dt(row["created_at"]),
        updated_at=times.dt(row["updated_at"]),
        metrics=json.loads(row["metrics"]),
        promotion=json.loads(row["promotion"]),
        error=row["error"],
    )


def _promotion(row: Any) -> base.PromotionRecord:
    return base.PromotionRecord(
        model=row["model"],
        version=row["version"],
        previous_version=row["previous_version"],
        run_key=row["run_key"],
        kind=outcomes.PromotionKind(row["kind"]),
        actor=row["actor"],
        reason=row["reason"],
        metrics=json.loads(row["metrics"]),
        at=times.dt(row["at"]),
    )


def _insert_promotion(db: connection.Connection, record: base.PromotionRecord, epoch: int | None) -> None:
    db.execute(
        "INSERT INTO promotions (model, version, previous_version, run_key, kind, actor, reason, metrics, at, epoch) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.model,
            record.version,
            record.previous_version,
            record.run_key,
            record.kind.value,
            record.actor,
            record.reason,
            json.dumps(record.metrics),
            times.ts(record.at),
            epoch,
        ),
    )


class RunStore:
    """The runs half of a journal (:mod:`daemon.journal.sqlite`, :mod:`daemon.journal.postgres`)."""

    database: connection.Database

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
        with self.database.transaction(f"moving run {run_key} to {new_state}") as db:
            row = db.execute(f"{_RUN} WHERE run_key = ?", (run_key,)).fetchone()
            if row is None:
                raise errors.PermanentError(f"no run {run_key} in the journal")
            current = _run(row)
            if new_state != current.state and new_state not in runs.TRANSITIONS[current.state]:
                raise errors.PermanentError(f"run {run_key} cannot move from {current.state} to {new_state}")
            db.execute(
                "UPDATE runs SET state = ?, updated_at = ?, backend = COALESCE(?, backend), "
                "backend_run_id = COALESCE(?, backend_run_id), metrics = ?, promotion = ?, "
                "error = COALESCE(?, error), epoch = ? WHERE run_key = ?",
                (
                    new_state.value,
                    times.ts(at),
                    backend,
                    backend_run_id,
                    json.dumps({**current.metrics, **(metrics or {})}),
                    json.dumps({**current.promotion, **(promotion or {})}),
                    error,
                    self.database.epoch,
                    run_key,
                ),
            )
            if record is not None:
                _insert_promotion(db, record, self.database.epoch)
            updated = _run(db.execute(f"{_RUN} WHERE run_key = ?", (run_key,)).fetchone())
            notice = notices.for_run(updated) if not current.state.final else None
            if notice is not None:  # told once, with the outcome it tells
                noticing.insert_notice(db, notice)
        return updated

    def get_run(self, run_key: ids.RunKey) -> runs.RunRecord | None:
        with self.database.reading() as db:
            row = db.execute(f"{_RUN} WHERE run_key = ?", (run_key,)).fetchone()
        return _run(row) if row is not None else None

    def runs(
        self, *, rule: str | None = None, states: frozenset[runs.RunState] | None = None, limit: int = 100
    ) -> list[runs.RunRecord]:
        query = f"{_RUN} WHERE 1 = 1"
        args: list[Any] = []
        if rule is not None:
            query += " AND rule = ?"
            args.append(rule)
        if states is not None:
            query += f" AND state IN ({', '.join('?' for _ in states)})"
            args.extend(sorted(s.value for s in states))
        query += " ORDER BY created_at DESC, run_key LIMIT ?"
        args.append(limit)
        with self.database.reading() as db:
            rows = db.execute(query, args).fetchall()
        return [_run(row) for row in rows]

    def run_counts(self) -> dict[str, int]:
        with self.database.reading() as db:
            rows = db.execute("SELECT state, COUNT(*) AS n FROM runs GROUP BY state").fetchall()
        return {str(row["state"]): int(row["n"]) for row in rows}

    def record_promotion(self, record: base.PromotionRecord) -> None:
        with self.database.transaction(f"recording a {record.kind} of {record.model}") as db:
            _insert_promotion(db, record, self.database.epoch)

    def promotions(self, model: str | None = None, *, limit: int = 20) -> list[base.PromotionRecord]:
        query = _PROMOTION
        args: list[Any] = []
        if model is not None:
            query += " WHERE model = ?"
            args.append(model)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self.database.reading() as db:
            rows = db.execute(query, args).fetchall()
        return [_promotion(row) for row in rows]
