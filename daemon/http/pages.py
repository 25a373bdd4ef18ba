"""The web dashboard: ``GET /`` (one page), its assets under ``/static/`` and the JSON it draws.

- ``GET /``: the page; every asset is served by the daemon (no CDN, no build step), and its Content
  Security Policy allows nothing else to load;
- ``GET /api/v1/dashboard``: the whole document the page polls (:func:`daemon.http.dashboard.overview`);
- ``GET /api/v1/models/{model}/history``: one model's versions, decisions, rollbacks and champion line.

Reading needs no token; the page's buttons call the token-guarded endpoints with the token the operator
types (kept in the tab's session storage only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from daemon.http import dashboard
from daemon.http.context import Ctx

STATIC = Path(__file__).with_name("static")
#: The page loads its own script, style and data and nothing else.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

pages = APIRouter()


@pages.get("/", include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(
        (STATIC / "index.html").read_text(encoding="utf-8"),
        headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@pages.get("/api/v1/dashboard")
def overview(ctx: Ctx) -> dict[str, Any]:
    """Everything the dashboard shows: rules and their gauges, runs with training curves, model histories,
    sources and datasets."""
    return dashboard.overview(
        loaded_rules=ctx.rulebook.rules,
        rule_errors=[error.render() for error in ctx.rulebook.errors],
        journal=ctx.journal,
        board=ctx.board,
        progress_board=ctx.progress,
        now=ctx.clock(),
        ui_url=ctx.mlflow_ui_url,
        token_configured=ctx.api_token is not None,
    )


@pages.get("/api/v1/models/{model}/history")
def model_history(ctx: Ctx, model: str) -> dict[str, Any]:
    """Every version of ``model`` the gate judged, its rollbacks and the champion's line over time."""
    known = {loaded.rule.model.registered_name for loaded in ctx.rulebook.rules.values()}
    if model not in known and not ctx.journal.promotions(model, limit=1):
        raise HTTPException(404, f"no model {model!r}: no rule trains it and the journal holds no promotion of it")
    return dashboard.model_history(model, ctx.journal)


def static_files() -> StaticFiles:
    """The page's script and style."""
    return StaticFiles(directory=STATIC)
