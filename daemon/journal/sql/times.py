"""Times in the journal: UTC epoch seconds (REAL) in the file, aware datetimes outside it."""

from __future__ import annotations

from datetime import UTC, datetime


def ts(moment: datetime) -> float:
    """Seconds since the epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("journal times must be aware datetimes")
    return moment.timestamp()


def dt(value: float) -> datetime:
    """The aware UTC datetime of epoch seconds."""
    return datetime.fromtimestamp(value, tz=UTC)
