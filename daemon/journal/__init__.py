"""The journal family: a small interface (``base.Journal``) and its backends (``sqlite``, ``postgres``).

Every source event is written here before it is acted on; every run's intent is committed here before it
is submitted. See ``base.py`` for the contract; ``sql/`` holds the stores both backends share.
"""

from __future__ import annotations

from pathlib import Path

from daemon import settings
from daemon.journal import base, sqlite


def open_journal(config: settings.JournalSettings) -> base.Journal:
    """Open the journal the settings name: PostgreSQL with ``url``, else the SQLite file at ``path``."""
    if config.url is not None:
        from daemon.journal import postgres  # psycopg is imported only by a daemon that uses it

        return postgres.PostgresJournal(
            config.url.get_secret_value(),
            password=config.password.get_secret_value() if config.password else None,
            connect_timeout_s=config.connect_timeout_s,
            statement_timeout_s=config.statement_timeout_s,
            idle_in_transaction_timeout_s=config.idle_in_transaction_timeout_s,
        )
    return sqlite.SqliteJournal(config.path, busy_timeout_s=config.busy_timeout_s, min_free_bytes=config.min_free_bytes)


def open_target(target: str | Path) -> base.Journal:
    """A journal by where it lives: a ``postgresql://`` URL or a SQLite file (tests, benchmarks)."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from daemon.journal import postgres

        return postgres.PostgresJournal(text)
    return sqlite.SqliteJournal(text)
