"""The PostgreSQL journal: the SQLite journal's stores over a database that replicas share.

Selected by ``journal.url: postgresql://...`` (the password from the environment or a Secret, never in a
message). Each public method is one transaction, as on SQLite; writers of every replica take turns on one
advisory lock. :meth:`PostgresJournal.leadership` is the leader's lease that fences acting writes (see
:mod:`.database`).
"""

from __future__ import annotations

from typing import Any

from daemon.journal import base
from daemon.journal.postgres import database, leasing
from daemon.journal.sql import inventory, noticing, pruning, ruling, running


class PostgresJournal(
    inventory.InventoryStore,
    ruling.RuleStore,
    running.RunStore,
    noticing.NoticeStore,
    pruning.PruneStore,
    base.Journal,
):
    """The journal in a PostgreSQL database.

    Args:
        conninfo: a ``postgresql://`` URL or a libpq ``key=value`` string.
        options: :class:`~daemon.journal.postgres.database.Connector`'s (password, timeouts).

    Raises:
        errors.TemporaryError: the server cannot be reached now.
        errors.PermanentError: the database holds a journal of a newer schema.
    """

    def __init__(self, conninfo: str, **options: Any) -> None:
        self.pg = database.Database(conninfo, **options)
        self.database = self.pg
        self.path = self.pg.path
        self._fingerprints: dict[str, tuple[int, str | None, int]] = {}
        self._leadership = leasing.PgLeadership(
            self.pg,
            database.Connector(conninfo, **{**options, "application_name": "retrain-daemon-lease"}),
        )

    def leadership(self) -> base.Leadership:
        return self._leadership

    def assert_leader(self) -> None:
        self.pg.assert_acting()

    def health(self) -> str | None:
        return self.database.health()

    def writable(self) -> bool:
        return self.health() is None

    def close(self) -> None:
        self._leadership.close()
        self.database.close()
