"""What the commands share: the settings the group built, and the journal as a command reads it."""

from __future__ import annotations

import click

from daemon import journal as journals
from daemon import settings
from daemon.journal import base, sqlite


def settings_of(ctx: click.Context) -> settings.Settings:
    """The settings built once by the group callback."""
    value = ctx.find_object(settings.Settings)
    assert value is not None, "the retrain group callback builds the settings first"
    return value


def journal_exists(config: settings.Settings) -> bool:
    """Whether there is a journal to open: a PostgreSQL one always (its schema is applied on open), a SQLite
    file once the daemon has run."""
    return config.journal.url is not None or config.journal.path.exists()


def open_journal(config: settings.Settings) -> base.Journal:
    """The journal the settings name (PostgreSQL with ``journal.url``, else the SQLite file)."""
    return journals.open_journal(config.journal)


def journal_or_empty(config: settings.Settings) -> base.Journal:
    """The journal, or an empty one in memory before the daemon's first run (the file is not created)."""
    if journal_exists(config):
        return open_journal(config)
    return sqlite.SqliteJournal(":memory:")
