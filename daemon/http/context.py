"""What the HTTP endpoints read and act on, and the token check of the mutating ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from daemon import logs
from daemon.http import metrics
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.model import progress as progress_
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.sources import base as source_base
from daemon.sources import webhook

log = logs.get_logger(__name__)


@dataclass(kw_only=True)
class Context:
    """What the endpoints read and act on; the reactor builds it from its own parts.

    Args:
        journal: events, decisions, runs and promotions.
        rulebook: the rules in force (hot-reloaded by the loop).
        board: the sources' statuses.
        metrics: the daemon's metrics.
        registry: the MLflow model registry (rollback).
        receiver: the MinIO webhook receiver.
        api_token: the bearer token of the mutating endpoints; None disables them.
        clock: the current time.
        since_last_pass: seconds since the loop completed a pass.
        liveness_timeout_s: ``/healthz`` fails past this.
    """

    journal: journal_base.Journal
    rulebook: reloading.RuleBook
    board: source_base.StatusBoard
    metrics: metrics.Metrics
    registry: registry.Mlflow
    receiver: webhook.WebhookReceiver
    api_token: str | None
    clock: Callable[[], datetime]
    since_last_pass: Callable[[], float]
    liveness_timeout_s: float
    s3_configured: bool = True
    """An S3 endpoint is set: rules reading a bucket can be triggered."""
    launcher: launcher_base.Launcher | None = None
    """Cancels runs (``POST /api/v1/runs/{run_key}/cancel``); None: cancelling is off."""
    progress: progress_.ProgressBoard = field(default_factory=progress_.ProgressBoard)
    """The training progress of runs (the dashboard's curves)."""
    mlflow_ui_url: str | None = None
    """The MLflow UI the dashboard links runs and versions to (``mlflow.ui_url``); None: no links."""
    leadership: Callable[[], dict[str, Any]] = lambda: {"role": "single"}
    """Who leads the replicas (``role``: leader, standby or single; ``holder``, ``leader``, ``epoch``)."""


def _context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


Ctx = Annotated[Context, Depends(_context)]


def require_token(request: Request, ctx: Ctx) -> None:
    """Refuse a mutating request without the API token (403 when none is configured)."""
    if ctx.api_token is None:
        raise HTTPException(403, "mutating endpoints are disabled: set http.api_token (RETRAIN_HTTP__API_TOKEN)")
    if not webhook.bearer_matches(request.headers.get("authorization"), ctx.api_token):
        log.warning("api_unauthorized", path=request.url.path)
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
