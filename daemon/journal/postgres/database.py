"""The PostgreSQL journal's connection: transactions serialized like SQLite's, fencing, errors by kind.

One connection (psycopg 3, autocommit, explicit transactions), shared by the daemon's threads behind a
lock, like the SQLite journal's. Every write transaction first takes one transaction-scoped advisory lock,
so writers from every replica take turns as they do on SQLite (``BEGIN IMMEDIATE``) and the stores' read-
then-write steps need no other isolation; reads take no lock (MVCC).

The schema lives in versioned ``.sql`` files (``daemon/journal/postgres/schema/NNNN_*.sql``), applied in
order at open under a session advisory lock (replicas starting together migrate once), and recorded in
``schema_version``.

Fencing (:mod:`daemon.journal.sql.connection`): a journal that joined an election refuses its own acting
transactions while it holds no lease, once its lease ran out on this process's monotonic clock, and when
the lease row names a newer epoch (read under the advisory lock, which taking the lease also takes); the
``runs``, ``decisions`` and ``promotions`` tables refuse a row of an older epoch by trigger (SQLSTATE
``RT409``) whatever the writer believes.

Errors by kind: the server unreachable, a timeout, a deadlock: :class:`~daemon.errors.TemporaryError` (the
connection is opened afresh next time); a full disk, a read-only server: :class:`~daemon.errors.
JournalUnwritable`; a constraint: :class:`~daemon.errors.JournalBug`; a stale epoch: :class:`~daemon.errors.
NotLeader`. Messages name the database by :func:`describe` (never its password).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo

from daemon import errors
from daemon.journal.sql import connection

#: The advisory lock every write transaction takes (``'retr'``), and the one migrations take.
WRITE_LOCK = 0x72657472
MIGRATE_LOCK = WRITE_LOCK + 1
#: SQLSTATE the fence trigger raises for a write of an older epoch.
STALE_EPOCH = "RT409"
_TEMPORARY_STATES = {
    "40001": "a serialization failure",
    "40P01": "a deadlock",
    "55P03": "a lock wait that timed out",
    "57014": "a statement that timed out",
    "57P01": "the server shutting down",
    "57P02": "the server shutting down",
    "57P03": "the server not accepting connections yet",
    "53300": "too many connections",
    "53200": "the server out of memory",
}
_UNWRITABLE_STATES = {"53100": "the database's disk is full", "25006": "the database is read-only"}


def describe(conninfo: str) -> str:
    """The database as messages name it: ``postgresql://user@host:port/dbname``, never the password."""
    try:
        params = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql://(an unreadable URL)"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


def classify(exc: psycopg.Error, *, where: str, doing: str) -> errors.RetrainError:
    """The daemon's error for a PostgreSQL failure, by kind (see the module)."""
    state = exc.sqlstate or ""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state == STALE_EPOCH:
        return errors.NotLeader(
            f"journal {where}: {doing} refused by the database: {detail}; a newer leader took over",
            leader=None,
            fenced=True,
        )
    if isinstance(exc, psycopg.IntegrityError):
        return errors.JournalBug(f"journal {where}: {doing} violated a constraint (a bug; please report it): {detail}")
    if state in _UNWRITABLE_STATES:
        return errors.JournalUnwritable(path=where, cause=f"{_UNWRITABLE_STATES[state]} ({detail})", doing=doing)
    if state in _TEMPORARY_STATES or state.startswith("08") or isinstance(exc, psycopg.OperationalError):
        why = _TEMPORARY_STATES.get(state, "the server unreachable or the connection lost")
        return errors.TemporaryError(f"journal {where}: {doing} failed on {why} ({detail}); will retry")
    return errors.PermanentError(f"journal {where}: {doing} failed: {detail}")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every PostgreSQL schema file, in order."""
    folder = resources.files("daemon.journal.postgres").joinpath("schema")
    return sorted(
        (int(entry.name.split("_", 1)[0]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The stores' ``?`` placeholders as psycopg's ``%s`` (their SQL has no ``?`` or ``%`` of its own)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Row(tuple[Any, ...]):
    """A row readable by position and by column name, like :class:`sqlite3.Row`."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)


def _rows(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row.names = names
        return row

    return make


class Sql:
    """The stores' view of a psycopg connection (:class:`daemon.journal.sql.connection.Connection`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        cursor = self.conn.cursor(row_factory=_rows)
        cursor.execute(_placeholders(sql), tuple(parameters))
        return cursor

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        cursor = self.conn.cursor(row_factory=_rows)
        cursor.executemany(_placeholders(sql), [tuple(p) for p in parameters])
        return cursor


class Connector:
    """Opens (and reopens, after a failure) one connection with the journal's timeouts.

    Args:
        conninfo: the URL or ``key=value`` string (a password in it is used, never shown).
        password: the password, when it is not in the URL (libpq's ``PGPASSWORD`` works too).
        connect_timeout_s: seconds for the whole connection set-up (a server that accepts and never answers).
        statement_timeout_s: the server cancels a statement running longer.
        idle_in_transaction_timeout_s: the server ends a session idle inside a transaction this long (a
            paused process cannot hold the writers' lock for longer).
        tcp_user_timeout_s: the kernel drops a connection whose data stays unacknowledged this long.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        password: str | None = None,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 60.0,
        idle_in_transaction_timeout_s: float = 10.0,
        tcp_user_timeout_s: float = 15.0,
        application_name: str = "retrain-daemon",
    ) -> None:
        self.conninfo = conninfo
        self.where = describe(conninfo)
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(connect_timeout_s)),
            "application_name": application_name,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": int(tcp_user_timeout_s * 1000),
            "options": (
                f"-c statement_timeout={int(statement_timeout_s * 1000)} "
                f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_s * 1000)}"
            ),
        }
        if password is not None:
            self._kwargs["password"] = password
        self._conn: psycopg.Connection[Any] | None = None

    def get(self, doing: str) -> psycopg.Connection[Any]:
        """The open connection, opened afresh if there is none or the last one broke."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.drop()
        try:
            self._conn = psycopg.connect(self.conninfo, **self._kwargs)
        except psycopg.Error as exc:
            raise classify(exc, where=self.where, doing=doing) from exc
        return self._conn

    def failed(self, exc: psycopg.Error, doing: str) -> errors.RetrainError:
        """The error for ``exc``; a connection that broke is dropped (the next call opens another)."""
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self.drop()
        return classify(exc, where=self.where, doing=doing)

    def drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


class Fence:
    """This process's side of the election: whether it joined one, the epoch it holds, until when (monotonic)."""

    def __init__(self) -> None:
        self.elected = False
        self.epoch: int | None = None
        self.valid_until = 0.0
        self.lost = threading.Event()
        """Set once this process held the lease and learnt that it no longer does."""

    def hold(self, epoch: int, *, valid_until: float) -> None:
        self.elected = True
        self.epoch = epoch
        self.valid_until = valid_until
        self.lost.clear()

    def lose(self) -> None:
        if self.epoch is not None:
            self.lost.set()
        self.epoch = None


class Database:
    """The journal's PostgreSQL database (see the module). Arguments as :class:`Connector`'s.

    Raises:
        errors.TemporaryError: the server cannot be reached (the caller retries the start).
        errors.PermanentError: the database holds a journal of a newer schema.
    """

    dialect: connection.Dialect = "postgres"

    def __init__(self, conninfo: str, **options: Any) -> None:
        self.connector = Connector(conninfo, **options)
        self.path = self.connector.where
        self.lock = threading.RLock()
        self.fence = Fence()
        self._write_problem: str | None = None
        try:
            self._migrate()
        except BaseException:
            self.connector.drop()
            raise

    @property
    def epoch(self) -> int | None:
        return self.fence.epoch

    def _migrate(self) -> None:
        files = migrations()
        newest = files[-1][0]
        doing = "applying the schema"
        with self.lock:
            conn = self.connector.get(doing)
            try:
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
                try:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
                    version = int(row[0]) if row else 0
                    if version > newest:
                        raise errors.PermanentError(
                            f"the journal {self.path} has schema {version}, newer than this daemon's {newest}: "
                            "upgrade the daemon"
                        )
                    for number, name, sql in files:
                        if number <= version:
                            continue
                        with conn.transaction():
                            conn.execute(sql.encode())  # a whole file: several statements, no parameters
                            conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (number, name))
                finally:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
            except psycopg.Error as exc:
                raise self.connector.failed(exc, doing) from exc

    def _check_fence(self, db: Sql, doing: str) -> None:
        """Refuse an acting write of a replica that is not the leader of the newest epoch (see the module)."""
        fence = self.fence
        if not fence.elected:
            return
        if fence.epoch is not None and time.monotonic() > fence.valid_until:
            held = fence.epoch
            fence.lose()
            raise errors.NotLeader(
                f"journal {self.path}: {doing} refused: the lease of epoch {held} ran out on this replica's clock "
                "before it was renewed (the process was paused or the database slow)",
                leader=None,
                fenced=True,
            )
        row = db.execute(
            "SELECT holder, epoch, expires_at < clock_timestamp() FROM leader_lease WHERE id = 1"
        ).fetchone()
        holder = None if row is None or row[2] else row[0]
        if fence.epoch is None:
            raise errors.NotLeader(
                f"journal {self.path}: {doing} refused: this replica is a standby; "
                f"{'the leader is ' + holder if holder else 'no replica leads now'}",
                leader=holder,
            )
        if row is None or int(row[1]) != fence.epoch:
            held = fence.epoch
            fence.lose()
            raise errors.NotLeader(
                f"journal {self.path}: {doing} refused: epoch {row[1] if row else '?'} holds the lease "
                f"({holder or 'nobody now'}), this replica's epoch {held} is over",
                leader=holder,
                fenced=True,
            )

    @contextlib.contextmanager
    def transaction(self, doing: str, *, acting: bool = True) -> Iterator[Sql]:
        """One write transaction, all of it or none of it, after every other replica's (the advisory lock)."""
        with self.lock:
            conn = self.connector.get(doing)
            try:
                with conn.transaction():
                    db = Sql(conn)
                    db.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
                    if acting:
                        self._check_fence(db, doing)
                    yield db
            except psycopg.Error as exc:
                error = self.connector.failed(exc, doing)
                if isinstance(error, errors.NotLeader):
                    self.fence.lose()
                if isinstance(error, errors.JournalUnwritable):
                    self._write_problem = error.cause
                raise error from exc
            self._write_problem = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[Sql]:
        """The connection for reads (under the lock; each statement sees what was committed before it)."""
        with self.lock:
            conn = self.connector.get("reading")
            try:
                yield Sql(conn)
            except psycopg.Error as exc:
                raise self.connector.failed(exc, "reading") from exc

    def assert_acting(self) -> None:
        with self.transaction("checking the lease before acting"):
            pass

    def health(self) -> str | None:
        """None when a write can land now, else why not (a real write of the probe row proves it)."""
        try:
            with self.transaction("writing the readiness probe", acting=False) as db:
                db.execute("UPDATE probe SET at = ? WHERE id = 1", (time.time(),))
        except errors.RetrainError as exc:
            return str(exc)
        return None

    @property
    def write_problem(self) -> str | None:
        return self._write_problem

    def close(self) -> None:
        with self.lock:
            self.connector.drop()
