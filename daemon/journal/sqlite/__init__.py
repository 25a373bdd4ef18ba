"""The SQLite journal: one file in WAL mode on a local disk (or a ReadWriteOnce volume).

Each public method is one transaction, so a SIGKILL leaves either the whole batch or none of it. The work
is split by subject: :mod:`.inventory` (events, inventory, snapshots, dataset status), :mod:`.ruling`
(what rules see and decide), :mod:`.running` (runs and promotions), :mod:`.pruning` (retention), over
:mod:`.database` (the connection, the schema files, transactions and errors by kind).
"""

from __future__ import annotations

from pathlib import Path

from daemon.journal import base
from daemon.journal.sql import inventory, noticing, pruning, ruling, running
from daemon.journal.sqlite import database


class SqliteJournal(
    inventory.InventoryStore,
    ruling.RuleStore,
    running.RunStore,
    noticing.NoticeStore,
    pruning.PruneStore,
    base.Journal,
):
    """The journal in one SQLite file.

    Args:
        path: the database file (created with its folder), or ``":memory:"`` for a throwaway journal.
        busy_timeout_s: how long to wait for another connection's write lock.
        min_free_bytes: free space the volume must keep for :meth:`health` to call it writable.

    Raises:
        errors.PermanentError: the file is not a journal, or one written by a newer version.
        errors.JournalUnwritable: the file cannot be created (a full or read-only volume).
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0, min_free_bytes: int = 0) -> None:
        self.database = database.Database(path, busy_timeout_s=busy_timeout_s, min_free_bytes=min_free_bytes)
        self.path = self.database.path
        self._fingerprints: dict[str, tuple[int, str | None, int]] = {}

    def health(self) -> str | None:
        return self.database.health()

    def writable(self) -> bool:
        return self.health() is None

    def close(self) -> None:
        self.database.close()
