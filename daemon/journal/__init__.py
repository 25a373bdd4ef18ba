"""The journal family: a small interface (``base.Journal``) and its backends (``sqlite``).

Every source event is written here before it is acted on; every run's intent is committed here before it
is submitted. See ``base.py`` for the contract.
"""

from __future__ import annotations

from daemon import settings
from daemon.journal import base, sqlite


def open_journal(config: settings.JournalSettings) -> base.Journal:
    """Open the journal the settings name (SQLite, the only backend today)."""
    return sqlite.SqliteJournal(config.path, busy_timeout_s=config.busy_timeout_s)
