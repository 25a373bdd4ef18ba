"""The notices outbox in SQL: written once per fact (``ON CONFLICT DO NOTHING`` on the fact's id), read back by
the notifier until every target has it or the attempts are spent."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from daemon.journal import base
from daemon.journal.sql import connection, times
from daemon.model import notices

_NOTICE = "SELECT id, kind, rule, title, body, at, attempts, delivered_to, done_at, last_error FROM notices"


def insert_notice(db: connection.Connection, notice: notices.Notice) -> bool:
    """Add ``notice`` to the outbox inside the caller's transaction; False when it is already there."""
    at = times.ts(notice.at)
    return (
        db.execute(
            "INSERT INTO notices (id, kind, rule, title, body, at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (notice.id, notice.kind.value, notice.rule, notice.title, notice.body, at, at),
        ).rowcount
        > 0
    )


def _pending(row: Any) -> base.PendingNotice:
    return base.PendingNotice(
        notice=notices.Notice(
            id=row["id"],
            kind=notices.NoticeKind(row["kind"]),
            rule=row["rule"],
            title=row["title"],
            body=row["body"],
            at=times.dt(row["at"]),
        ),
        attempts=row["attempts"],
        delivered_to=tuple(json.loads(row["delivered_to"])),
        done=row["done_at"] is not None,
        last_error=row["last_error"],
    )


class NoticeStore:
    database: connection.Database

    def record_notice(self, notice: notices.Notice) -> bool:
        with self.database.transaction(f"recording the notice {notice.id}") as db:
            return insert_notice(db, notice)

    def due_notices(self, now: datetime, *, limit: int = 50) -> list[base.PendingNotice]:
        with self.database.reading() as db:
            rows = db.execute(
                f"{_NOTICE} WHERE done_at IS NULL AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                (times.ts(now), limit),
            ).fetchall()
        return [_pending(row) for row in rows]

    def notices(self, *, limit: int = 50) -> list[base.PendingNotice]:
        with self.database.reading() as db:
            rows = db.execute(f"{_NOTICE} ORDER BY at DESC, id LIMIT ?", (limit,)).fetchall()
        return [_pending(row) for row in rows]

    def notice_attempted(
        self,
        notice_id: str,
        *,
        delivered_to: tuple[str, ...],
        error: str | None,
        retry_at: datetime | None,
        at: datetime,
    ) -> None:
        with self.database.transaction(f"recording a delivery of the notice {notice_id}") as db:
            db.execute(
                "UPDATE notices SET attempts = attempts + 1, delivered_to = ?, last_error = ?, "
                "next_at = COALESCE(?, next_at), done_at = ? WHERE id = ?",
                (
                    json.dumps(sorted(delivered_to)),
                    error,
                    None if retry_at is None else times.ts(retry_at),
                    times.ts(at) if retry_at is None else None,
                    notice_id,
                ),
            )
