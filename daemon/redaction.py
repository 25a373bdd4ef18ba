"""Redaction: credentials written inside URIs and query strings never reach a log, a message or ``config show``.

Settings hold secrets as :class:`pydantic.SecretStr`, but a URI is one string: ``http://admin:pw@mlflow:5000``
carries its password in the middle, and so does an error message that quotes it. :func:`redact` replaces the
password of every ``scheme://user:password@host`` (and a lone ``token@host``) and the value of query
parameters named like credentials, wherever they appear in a text. Logs, errors, the settings display and
the HTTP API all pass through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# scheme://user:password@ or scheme://token@ (anything up to the first '@' before the host part).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:?#]*)(?::(?P<password>[^\s/@?#]*))?@")
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|secret|password|passwd|signature|credential|key)[A-Za-z0-9_.-]*))="
    r"(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    if match["password"] is not None:
        return f"{match['scheme']}{match['user']}:{MASK}@"
    return f"{match['scheme']}{MASK}@"  # a bare token before '@' is a credential too


def redact(text: str) -> str:
    """``text`` with every credential inside a URI or query string replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}={MASK}", _USERINFO.sub(_userinfo, text))


def redact_tree(value: Any) -> Any:
    """:func:`redact` applied to every string in nested mappings and lists (for displays of settings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value
