"""The journal's contract tests run on both backends: a SQLite file and a database on a real PostgreSQL server.

``target`` is where the journal lives (a file path or a ``postgresql://`` URL, fresh per test); ``journal``
is one open on it; reopening the same ``target`` is a restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import journal as journals
from daemon.journal import base


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    return str(request.getfixturevalue("postgres_server").create_database())


@pytest.fixture
def journal(target: str) -> Iterator[base.Journal]:
    opened = journals.open_target(target)
    yield opened
    opened.close()
