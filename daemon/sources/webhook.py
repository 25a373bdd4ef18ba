"""The MinIO webhook target: ``POST /events/minio`` with a bearer token.

MinIO's webhook target (``MINIO_NOTIFY_WEBHOOK_*``, with ``queue_dir``) retries every delivery that does
not get a 2xx. So the receiver replies 2xx only after the events are journaled, and anything else (bad
token, malformed body, journal unavailable) leaves the events with MinIO for a retry or is refused for
good with a 4xx:

- 401: missing or wrong bearer token (compared in constant time);
- 413: body larger than ``sources.webhook_max_body_bytes``;
- 400: not JSON, or not a bucket notification (the message names the record and field);
- 503: the journal could not store the events (MinIO retries);
- 200: journaled (duplicates are fine: appending is idempotent).

Nothing from a refused body enters the journal.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon import errors, logs
from daemon.model import events
from daemon.sources import base, datasets, minio_records

log = logs.get_logger(__name__)

NAME = "webhook"


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when an ``Authorization`` header carries ``Bearer <token>`` (compared in constant time)."""
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class WebhookReceiver:
    """Checks, parses and journals webhook deliveries.

    Args:
        token: the expected bearer token; None disables the webhook (404).
        max_body_bytes: the largest body accepted.
        sink: where events go.
        locations: the current datasets by name (follows rule reloads).
    """

    token: str | None
    max_body_bytes: int
    sink: base.EventSink
    locations: Callable[[], Mapping[str, datasets.DatasetLocation]]

    def authorized(self, authorization: str | None) -> bool:
        return self.token is not None and bearer_matches(authorization, self.token)

    def _reject(self, status: int, message: str) -> Reply:
        self.sink.board.add(NAME, rejected=1)
        log.warning("webhook_rejected", status=status, reason=message)
        return Reply(status=status, body={"detail": message})

    def handle(self, *, authorization: str | None, body: bytes | None) -> Reply:
        """Answer one delivery; ``body`` is None when it was larger than ``max_body_bytes``."""
        if self.token is None:
            return Reply(status=404, body={"detail": "webhook disabled: set sources.webhook_token"})
        if not self.authorized(authorization):
            return self._reject(401, "missing or wrong bearer token")
        if body is None or len(body) > self.max_body_bytes:
            return self._reject(413, f"body exceeds {self.max_body_bytes} bytes")
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._reject(400, f"body is not JSON: {errors.truncate(str(exc), 120)}")
        try:
            parsed = minio_records.parse(document, self.locations(), source=events.Source.WEBHOOK)
        except errors.InvalidInput as exc:
            return self._reject(400, str(exc))
        try:
            result = self.sink.deliver(NAME, parsed.events)
        except errors.RetrainError as exc:
            log.error("webhook_journal_failed", error=str(exc))
            return Reply(status=503, body={"detail": "could not journal the events; retry later"})
        self.sink.board.update(NAME, connected=True)
        return Reply(
            status=200, body={"journaled": result.new, "duplicates": result.duplicates, "ignored": parsed.ignored}
        )
