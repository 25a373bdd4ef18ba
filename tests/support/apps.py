"""Build the daemon's HTTP app around real parts (a journal, a rule book, a status board) for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from daemon.http import app as http_app
from daemon.http import metrics
from daemon.journal import base as journal_base
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.sources import base, webhook

#: The bearer token tests configure for the mutating API endpoints.
API_TOKEN = "api-token-" + "y" * 24
#: An MLflow address nothing listens on: for apps whose tests never reach the registry.
NO_MLFLOW = "http://127.0.0.1:9"


def context_for(
    journal: journal_base.Journal,
    *,
    receiver: webhook.WebhookReceiver | None = None,
    rules_path: Path = Path("rules"),
    api_token: str | None = None,
    tracking_uri: str = NO_MLFLOW,
    since_last_pass: Callable[[], float] = lambda: 0.0,
) -> http_app.Context:
    board = receiver.sink.board if receiver is not None else base.StatusBoard()
    clock = lambda: datetime.now(UTC)  # noqa: E731
    rulebook = reloading.RuleBook(rules_path)
    rulebook.refresh()
    if receiver is None:
        sink = base.EventSink(journal=journal, board=board, clock=clock)
        receiver = webhook.WebhookReceiver(token=None, max_body_bytes=1024, sink=sink, locations=dict)
    return http_app.Context(
        journal=journal,
        rulebook=rulebook,
        board=board,
        metrics=metrics.Metrics(
            board=board, journal=journal, rulebook=rulebook, clock=clock, since_last_pass=since_last_pass
        ),
        registry=registry.Mlflow(tracking_uri=tracking_uri),
        receiver=receiver,
        api_token=api_token,
        clock=clock,
        since_last_pass=since_last_pass,
        liveness_timeout_s=60.0,
    )


def app_for(journal: journal_base.Journal, **kwargs: object) -> http_app.FastAPI:
    return http_app.create_app(context_for(journal, **kwargs))  # type: ignore[arg-type]


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request through the ASGI app, without a socket (fast enough for fuzzing)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())
