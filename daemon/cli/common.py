"""What the commands share: the settings the group built, and the journal as a command reads it."""

from __future__ import annotations

import click

from daemon import settings
from daemon.journal import base, sqlite


def settings_of(ctx: click.Context) -> settings.Settings:
    """The settings built once by the group callback."""
    value = ctx.find_object(settings.Settings)
    assert value is not None, "the retrain group callback builds the settings first"
    return value


def journal_or_empty(config: settings.Settings) -> base.Journal:
    """The journal, or an empty one in memory before the daemon's first run (the file is not created)."""
    if config.journal.path.exists():
        return sqlite.SqliteJournal(config.journal.path, busy_timeout_s=config.journal.busy_timeout_s)
    return sqlite.SqliteJournal(":memory:")
