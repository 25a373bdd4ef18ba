"""What every part of the rule schema shares: strict frozen models and human durations (``90s``, ``10m``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from daemon.model import durations


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return durations.parse(value)
    raise ValueError(f"{value!r} is not a duration: write it with a unit, e.g. 90s, 10m, 6h")


#: A human duration, ``timedelta`` inside, written back the way users write it.
Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(durations.format, return_type=str)]


class Spec(BaseModel):
    """A part of a rule: unknown keys are errors, a loaded value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def positive(value: timedelta, what: str) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{what} must be longer than 0s")
    return value
