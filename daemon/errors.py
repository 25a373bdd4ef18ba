"""The one error hierarchy of the daemon.

Adapters translate library errors into these types with ``raise ... from exc``; nothing above an adapter
catches a kfp, mlflow or minio exception. Loops tell the two families apart:

- :class:`TemporaryError`: retrying later may succeed (a service is down, a timeout, a 503). Loops back off
  and retry, and say when.
- :class:`PermanentError`: retrying the same thing fails the same way (a broken rule file, a malformed
  event, a corrupt image). Loops record the failure, report it clearly, and move on.

Each service client maps the service's own failures once, onto :class:`NotFound`, :class:`InvalidRequest`,
:class:`Unauthorized` (permanent: asking again gives the same answer) or :class:`ServiceUnavailable`
(temporary). The journal adds its own kinds: :class:`JournalUnwritable` (a full or read-only volume) and
:class:`JournalBug` (a constraint violated: never retried).

Messages say what happened, the likely cause and what happens next. Remote error bodies are truncated
with :func:`truncate` before they reach a message, and no message ever carries a secret: credentials
inside URIs are redacted (:mod:`daemon.redaction`).
"""

from __future__ import annotations

from pathlib import Path

from daemon import redaction

#: Remote error bodies longer than this are cut before they reach a log line or an exception message.
MAX_REMOTE_BODY_CHARS = 256


def truncate(text: str, limit: int = MAX_REMOTE_BODY_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was left out."""
    text = redaction.redact(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class RetrainError(Exception):
    """Base of every error the daemon raises on purpose."""


class TemporaryError(RetrainError):
    """A failure that may go away by itself: retry with backoff."""


class PermanentError(RetrainError):
    """A failure that will repeat until someone changes the input or the configuration."""


class ServiceUnavailable(TemporaryError):
    """A service the daemon depends on (S3, MLflow, KFP) cannot be reached or answered 5xx.

    Args:
        service: the service's name as users know it, e.g. ``"MLflow"``.
        endpoint: where the daemon tried to reach it (never with credentials in it).
        detail: what went wrong, already truncated.
        retry_in_s: when the caller will try again, if it will.
    """

    def __init__(self, *, service: str, endpoint: str, detail: str, retry_in_s: float | None = None) -> None:
        self.service = service
        self.endpoint = redaction.redact(endpoint)
        self.detail = truncate(detail)
        self.retry_in_s = retry_in_s
        then = f"; will retry in {retry_in_s:g} s" if retry_in_s is not None else ""
        super().__init__(f"{service} at {self.endpoint} is unavailable: {self.detail}{then}")


class NotFound(PermanentError):
    """The service answered that what was asked for does not exist (a model, a version, an alias)."""


class InvalidRequest(PermanentError):
    """The service refused the request as malformed (a bad filter, a bad parameter): a bug or bad input."""


class Unauthorized(PermanentError):
    """The service refused the daemon's credentials: fix the credentials, retrying will not help."""


class InvalidInput(PermanentError):
    """Input from outside (an event, a label file, an image) that cannot be accepted as it is."""


class JournalUnwritable(TemporaryError):
    """The journal's volume refuses writes (full, read-only, I/O errors). Callers keep their input and retry
    (a webhook answers 503, a source keeps its queue); ``/readyz`` names the cause until a write lands."""

    def __init__(self, *, path: str, cause: str, doing: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(
            f"journal {path} cannot be written ({doing}): {cause}; free space or fix the volume, input is kept "
            "and retried"
        )


class NotLeader(TemporaryError):
    """An acting write (an intent, a decision, a run's outcome, a promotion) by a replica that does not hold
    the leader's lease of the newest epoch: refused by the shared journal, nothing of it lands.

    ``leader`` names the replica that holds the lease (None: nobody now); ``fenced`` is True when this
    replica was the leader and a newer epoch exists (it lost the lease: it must stop acting at once)."""

    def __init__(self, message: str, *, leader: str | None, fenced: bool = False) -> None:
        self.leader = leader
        self.fenced = fenced
        super().__init__(message)


class JournalBug(PermanentError):
    """The journal refused a write that breaks one of its invariants (a constraint): a bug, never retried."""


class ConfigError(PermanentError):
    """A configuration or rule file that is wrong, naming the file, line, rule and field.

    ``str(error)`` reads ``file:line: rule 'x': field 'y': message``, leaving out the parts that are
    unknown, so an editor or CI log can jump straight to the spot.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.rule = rule
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        """The error as one line: ``file:line: rule 'x': field 'y': message``."""
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        if self.rule is not None:
            parts.append(f"rule {self.rule!r}")
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)


class ConfigErrors(PermanentError):
    """Several :class:`ConfigError` found in one pass: users see all of them at once, not one per run."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(e.render() for e in self.errors))
