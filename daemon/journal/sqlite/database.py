"""The SQLite file under the journal: connection, schema migrations, transactions, and errors by kind.

One connection in WAL mode (``retrain explain`` and ``retrain status`` read while the daemon writes),
``synchronous=FULL`` (every commit is durable), shared by the daemon's threads behind a lock: writes are
short and SQLite allows one writer at a time anyway. Rows come back as :class:`sqlite3.Row` (by name).

The schema lives in versioned ``.sql`` files (``daemon/journal/schema/NNNN_*.sql``), applied in order at
open, each in its own transaction, and recorded in ``PRAGMA user_version``.

SQLite's errors are mapped once, by kind:

- busy or locked (another writer): :class:`~daemon.errors.TemporaryError`, retried by the caller;
- disk full, read-only volume, I/O error: :class:`~daemon.errors.JournalUnwritable` (temporary for the
  caller, who keeps its input; loud in the log; ``/readyz`` says why until a write lands again);
- a constraint violated: :class:`~daemon.errors.JournalBug`, a bug surfaced as one, never retried;
- anything else: :class:`~daemon.errors.PermanentError`.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from daemon import errors
from daemon.journal.sql import connection

#: sqlite3 primary result codes (``sqlite_errorcode & 0xFF``) that mean "try again shortly".
_BUSY = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: ... that mean the volume refuses writes: full, read-only, I/O error, cannot open.
_UNWRITABLE = {13: "the disk is full", 8: "the volume is read-only", 10: "an I/O error", 14: "cannot open a file"}
_CONSTRAINT = 19


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every schema file, in order."""
    found = []
    for entry in resources.files("daemon.journal").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """The statements of a schema file, split where SQLite says one is complete (not at every ';')."""
    found: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip() and not all(part.strip().startswith("--") for part in pending.splitlines() if part.strip()):
        raise ValueError(f"schema file ends inside a statement: {pending.strip()[:80]!r}")
    return found


def classify(exc: sqlite3.Error, *, path: str, doing: str) -> errors.RetrainError:
    """The daemon's error for an SQLite failure, by kind."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if isinstance(exc, sqlite3.IntegrityError) or code == _CONSTRAINT:
        return errors.JournalBug(f"journal {path}: {doing} violated a constraint (a bug; please report it): {exc}")
    if code in _BUSY or "locked" in str(exc):
        return errors.TemporaryError(f"journal {path} is busy ({doing}: {exc}); will retry")
    if code in _UNWRITABLE:
        return errors.JournalUnwritable(path=path, cause=f"{_UNWRITABLE[code]} ({exc})", doing=doing)
    return errors.PermanentError(f"journal {path}: {doing} failed: {exc}")


class Database:
    """The journal's SQLite connection.

    Args:
        path: the database file (created with its folder), or ``":memory:"``.
        busy_timeout_s: how long to wait for another connection's write lock.
        min_free_bytes: free space the volume must keep for :meth:`health` to call it writable.

    Raises:
        errors.PermanentError: the file is not a journal, or one written by a newer version.
        errors.JournalUnwritable: the file cannot be created or migrated (full or read-only volume).
    """

    dialect: connection.Dialect = "sqlite"
    epoch: int | None = None
    """A SQLite journal has one writer and no election: its writes carry no epoch."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0, min_free_bytes: int = 0) -> None:
        self.path = str(path)
        self.min_free_bytes = min_free_bytes
        self.lock = threading.RLock()
        self._write_problem: str | None = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self._enter_wal(busy_timeout_s)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
        except OSError as exc:
            raise errors.JournalUnwritable(path=self.path, cause=str(exc), doing="opening") from exc
        except sqlite3.Error as exc:
            error = classify(exc, path=self.path, doing="opening")
            if not isinstance(error, errors.JournalUnwritable):
                error = errors.PermanentError(f"cannot open the journal {self.path}: {exc}")
            raise error from exc
        self._migrate()

    def _enter_wal(self, timeout_s: float) -> None:
        """Switch to WAL mode. A new file opened by several processes at once answers "database is locked" to
        some of them without waiting (SQLite refuses to wait where waiting could deadlock), so retry until the
        busy timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        files = migrations()
        newest = files[-1][0]
        try:
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise errors.PermanentError(f"{self.path} is not a journal: {exc}") from exc
        if version > newest:
            raise errors.PermanentError(
                f"the journal {self.path} has schema {version}, newer than this daemon's {newest}: upgrade the daemon"
            )
        for number, name, sql in files:
            if number <= version:
                continue
            with self.transaction(f"applying schema {name}") as db:
                # Another process (the daemon, a `retrain` command) may have applied it since the version was
                # read: under the write lock now, look again.
                if int(db.execute("PRAGMA user_version").fetchone()[0]) >= number:
                    continue
                for statement in statements(sql):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def transaction(self, doing: str, *, acting: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it or none of it. SQLite failures are raised by kind (see module).
        ``acting`` is for the shared journal's fencing (:mod:`daemon.journal.sql.connection`): one writer here."""
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failed(exc, doing) from exc
            try:
                yield self.db
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(exc, doing) from exc
                raise
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise self._failed(exc, doing) from exc
            self._write_problem = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (under the lock; reads see committed data only)."""
        with self.lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise classify(exc, path=self.path, doing="reading") from exc

    def _failed(self, exc: sqlite3.Error, doing: str) -> errors.RetrainError:
        error = classify(exc, path=self.path, doing=doing)
        if isinstance(error, errors.JournalUnwritable):
            self._write_problem = error.cause
        return error

    def health(self) -> str | None:
        """None when a write can land now, else why not (the readiness probe asks this).

        A real write proves it: the probe row is rewritten in a transaction. A volume with less than
        ``min_free_bytes`` free is reported too: WAL frames can be reused, so a full disk may let a tiny
        probe through and refuse the next batch of events.
        """
        if self.path != ":memory:":
            try:
                free = shutil.disk_usage(Path(self.path).parent).free
            except OSError as exc:
                return f"cannot check free space: {exc}"
            if free < self.min_free_bytes:
                return f"only {free} bytes free on the journal's volume (need {self.min_free_bytes})"
        try:
            with self.transaction("writing the readiness probe", acting=False) as db:
                db.execute("UPDATE probe SET at = ? WHERE id = 1", (time.time(),))
        except errors.RetrainError as exc:
            return str(exc)
        return None

    @property
    def write_problem(self) -> str | None:
        """Why the last write failed for lack of a writable volume (cleared by the next write that lands)."""
        return self._write_problem

    def close(self) -> None:
        with self.lock:
            self.db.close()
