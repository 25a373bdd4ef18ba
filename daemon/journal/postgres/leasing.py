"""The leader's lease in PostgreSQL: one row (holder, epoch, expiry by the database's clock).

Renewals run on a connection of their own, so they never wait behind the journal's writers; taking and
giving up the lease take the writers' advisory lock, so no write of the old epoch commits after the new
epoch exists (and none of the new one before it).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg

from daemon.journal import base
from daemon.journal.postgres import database as pg


class PgLeadership(base.Leadership):
    """:class:`~daemon.journal.base.Leadership` over ``leader_lease``, fencing ``db`` to the epoch it holds."""

    def __init__(self, db: pg.Database, connector: pg.Connector) -> None:
        self.db = db
        self.connector = connector
        self.lock = threading.Lock()

    def _one(self, doing: str, sql: str, params: tuple[object, ...], *, locked: bool) -> tuple[object, ...] | None:
        with self.lock:
            conn = self.connector.get(doing)
            try:
                with conn.transaction():
                    if locked:
                        conn.execute("SET LOCAL lock_timeout = '2s'")
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg.WRITE_LOCK,))
                    return conn.execute(sql, params).fetchone()
            except psycopg.Error as exc:
                raise self.connector.failed(exc, doing) from exc

    def acquire(self, holder: str, *, ttl_s: float) -> int | None:
        self.db.fence.elected = True  # from the first try on, this journal's acting writes need the lease
        began = time.monotonic()
        row = self._one(
            "taking the leader's lease",
            "UPDATE leader_lease SET holder = %s, epoch = epoch + 1, acquired_at = clock_timestamp(), "
            "renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => %s), renewals = 0 "
            "WHERE id = 1 AND (holder IS NULL OR expires_at < clock_timestamp()) RETURNING epoch",
            (holder, ttl_s),
            locked=True,
        )
        if row is None:
            return None
        epoch = int(str(row[0]))
        self.db.fence.hold(epoch, valid_until=began + ttl_s)
        return epoch

    def renew(self, holder: str, *, epoch: int, ttl_s: float) -> bool:
        began = time.monotonic()
        row = self._one(
            "renewing the leader's lease",
            "UPDATE leader_lease SET renewed_at = clock_timestamp(), "
            "expires_at = clock_timestamp() + make_interval(secs => %s), renewals = renewals + 1 "
            "WHERE id = 1 AND holder = %s AND epoch = %s RETURNING epoch",
            (ttl_s, holder, epoch),
            locked=False,
        )
        if row is None:
            self.db.fence.lose()
            return False
        if self.db.fence.epoch == epoch:
            self.db.fence.valid_until = began + ttl_s
        return True

    def release(self, holder: str, *, epoch: int) -> None:
        self._one(
            "giving up the leader's lease",
            "UPDATE leader_lease SET holder = NULL, expires_at = clock_timestamp() "
            "WHERE id = 1 AND holder = %s AND epoch = %s RETURNING epoch",
            (holder, epoch),
            locked=True,
        )
        self.db.fence.epoch = None

    def current(self) -> base.LeaseState:
        row = self._one(
            "reading the leader's lease",
            "SELECT holder, epoch, expires_at, renewed_at, renewals, expires_at < clock_timestamp(), "
            "GREATEST(0, EXTRACT(EPOCH FROM expires_at - clock_timestamp()))::float8 FROM leader_lease WHERE id = 1",
            (),
            locked=False,
        )
        if row is None:
            return base.LeaseState(holder=None, epoch=0, expires_at=None, renewed_at=None, renewals=0, expired=True)
        holder, epoch, expires_at, renewed_at, renewals, expired, expires_in = row
        return base.LeaseState(
            holder=holder if isinstance(holder, str) else None,
            epoch=int(str(epoch)),
            expires_at=_aware(expires_at),
            renewed_at=_aware(renewed_at),
            renewals=int(str(renewals)),
            expired=bool(expired),
            expires_in_s=float(str(expires_in)),
        )

    def fenced(self) -> bool:
        fence = self.db.fence
        if fence.epoch is not None and time.monotonic() > fence.valid_until:
            fence.lose()
        return fence.lost.is_set()

    def close(self) -> None:
        with self.lock:
            self.connector.drop()


def _aware(value: object) -> datetime | None:
    return value.astimezone(UTC) if isinstance(value, datetime) else None
