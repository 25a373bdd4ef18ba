"""What the journal's stores need of a database: the same small surface over SQLite and PostgreSQL.

The stores (:mod:`.inventory`, :mod:`.ruling`, :mod:`.running`, :mod:`.noticing`, :mod:`.pruning`) write
one SQL that both engines accept: ``?`` placeholders (the PostgreSQL connection translates them),
``ON CONFLICT`` upserts, rows read by name or by position. Where the engines differ (SQLite's ``json_each``
against PostgreSQL's ``jsonb_each_text``), a store asks :attr:`Database.dialect`.

A transaction is *acting* when it is what only the leader does (an intent, a decision, a run's outcome, a
promotion record, a schedule slot, a delivery): on a database shared by replicas, an acting transaction of a
replica that is not the leader of the newest epoch is refused (:class:`~daemon.errors.NotLeader`). Events,
manual requests and pauses are not acting: every replica journals them (the webhook behind a Service that
reaches any replica must not lose a delivery).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgres"]


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Database(Protocol):
    """A journal's database: transactions, reads, its dialect and the epoch its acting writes carry."""

    dialect: Dialect
    path: str
    """Where the journal lives, for messages (a file, or a PostgreSQL URL without its password)."""

    @property
    def epoch(self) -> int | None:
        """The leader's epoch that acting writes carry; None where there is no election (SQLite, a CLI)."""
        ...

    def transaction(self, doing: str, *, acting: bool = True) -> contextlib.AbstractContextManager[Connection]: ...

    def reading(self) -> contextlib.AbstractContextManager[Connection]: ...

    def health(self) -> str | None: ...

    def close(self) -> None: ...
