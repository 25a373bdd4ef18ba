"""Human durations: ``90s``, ``10m``, ``6h``, ``2d``, ``1h30m`` in rule files; ``timedelta`` inside.

Durations are parsed once at the edge (rule validation) and formatted back for messages, so a reason reads
"need 10m", the way the user wrote it.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")


def parse(text: str) -> timedelta:
    """Parse ``"90s"``, ``"10m"``, ``"1h30m"``.

    Raises:
        ValueError: not a duration; the message shows the accepted forms.
    """
    compact = text.strip().lower().replace(" ", "")
    if not _WHOLE.match(compact):
        raise ValueError(
            f"{text!r} is not a duration: use a number with a unit s, m, h, d or w, e.g. 90s, 10m, 6h, 1h30m"
        )
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact)))


def format(delta: timedelta) -> str:
    """Format like the input: ``timedelta(minutes=90)`` -> ``"1h30m"``; seconds below 1 are dropped."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
