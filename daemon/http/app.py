"""The daemon's HTTP surface: probes, metrics, the MinIO webhook and the JSON API.

- ``GET /healthz``: the loop completed a pass within ``http.liveness_timeout_s`` (liveness probe);
- ``GET /readyz``: the journal can be written and every source that reported is connected (readiness
  probe; a failing pod leaves the Service, and MinIO's webhook queue holds the events meanwhile);
- ``GET /metrics``: Prometheus exposition (:mod:`daemon.http.metrics`);
- ``POST /events/minio``: the MinIO webhook target (its own bearer token, :mod:`daemon.sources.webhook`);
- ``GET /api/v1/...``: read-only JSON of status (the document ``retrain status --json`` prints), rules,
  decisions, runs, champions and sources;
- ``GET /``: the web dashboard (:mod:`daemon.http.pages`);
- ``POST /api/v1/rules/{rule}/trigger`` and ``POST /api/v1/models/{model}/rollback``: need
  ``Authorization: Bearer <http.api_token>``; with no token configured they answer 403.

Every replica of an HA deployment serves all of it. Writes that only journal (webhook deliveries, manual
triggers, pauses) land from any replica; a rollback or a cancel on a standby answers 503 naming the
leader (the Service sends the retry to any replica; ``/api/v1/status`` says which one leads).

Handlers that touch the journal or MLflow are plain functions: FastAPI runs them in its thread pool, so a
slow MLflow never blocks the probes.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from daemon import __version__, errors, explaining, logs, operating, redaction
from daemon.http import dashboard, pages
from daemon.http.context import Context as Context
from daemon.http.context import Ctx, require_token
from daemon.model import ids, runs
from daemon.sources import drifting

log = logs.get_logger(__name__)


class _ActionRequest(pydantic.BaseModel):
    """The body of a mutating call: who asks (recorded as ``api:<actor>``); subclasses add why."""

    model_config = pydantic.ConfigDict(extra="forbid")

    actor: str = pydantic.Field(default="api", min_length=1, max_length=100)


class TriggerRequest(_ActionRequest):
    reason: str = pydantic.Field(default="manual trigger (API)", min_length=1, max_length=500)


class RollbackRequest(_ActionRequest):
    to: str | None = pydantic.Field(default=None, pattern=r"^[0-9]+$", description="version; default: the previous")
    reason: str = pydantic.Field(default="manual rollback (API)", min_length=1, max_length=500)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` (an oversized body is never held whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# --- probes, metrics and the webhook ----------------------------------------------------------------
service = APIRouter()


@service.get("/healthz")
def healthz(ctx: Ctx) -> JSONResponse:
    age = ctx.since_last_pass()
    alive = age <= ctx.liveness_timeout_s
    body = {"status": "ok" if alive else "stalled", "last_pass_age_s": round(age, 3)}
    return JSONResponse(status_code=200 if alive else 503, content=body)


@service.get("/readyz")
def readyz(ctx: Ctx) -> JSONResponse:
    problem = ctx.journal.health()
    checks = {"journal": "ok" if problem is None else f"cannot be written: {problem}"}
    for status in ctx.board.all():
        # What feeds the journal must work; drift checks read MLflow and are reported, not gating.
        if not status.connected and status.last_error and status.name != drifting.NAME:
            checks[f"source {status.name}"] = redaction.redact(status.last_error)
    ready = all(value == "ok" for value in checks.values())
    # A standby is ready too: it serves the dashboard and the read API and journals webhook deliveries into
    # the shared journal, so it stays in the Service; the body says which replica leads.
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"ready": ready, "checks": checks, "leadership": ctx.leadership()},
    )


@service.get("/metrics")
def prometheus(ctx: Ctx) -> Response:
    body, content_type = ctx.metrics.render()
    return Response(content=body, media_type=content_type)


@service.post("/events/minio")
async def minio_events(request: Request, ctx: Ctx) -> Response:
    body = await _read_limited(request, ctx.receiver.max_body_bytes)
    authorization = request.headers.get("authorization")
    reply = await run_in_threadpool(lambda: ctx.receiver.handle(authorization=authorization, body=body))
    return JSONResponse(status_code=reply.status, content=reply.body)


# --- read-only JSON API -----------------------------------------------------------------------------
api = APIRouter(prefix="/api/v1")


@api.get("/status")
def status(ctx: Ctx) -> dict[str, Any]:
    """The document ``retrain status --json`` prints, with who leads the replicas."""
    return {**explaining.status_data(ctx.rulebook.rules, ctx.journal, now=ctx.clock()), "leadership": ctx.leadership()}


@api.get("/rules")
def rules(ctx: Ctx) -> dict[str, Any]:
    found = [
        {
            "name": name,
            "file": loaded.file,
            "line": loaded.line,
            "paused": explaining.pause_data(ctx.journal.pause_of(name)),
            "rule": loaded.rule.model_dump(mode="json"),
        }
        for name, loaded in sorted(ctx.rulebook.rules.items())
    ]
    return {"rules": found, "errors": [error.render() for error in ctx.rulebook.errors]}


@api.get("/decisions")
def decisions(
    ctx: Ctx,
    rule: Annotated[str | None, Query(description="one rule; default: every rule in force")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    if rule is not None and rule not in ctx.rulebook.rules and not ctx.journal.has_history(rule):
        raise HTTPException(404, f"no rule {rule!r}: not in force and never journaled")
    names = [rule] if rule is not None else sorted(ctx.rulebook.rules)
    return {
        name: [explaining.decision_record_data(r) for r in ctx.journal.decisions(name, limit=limit)] for name in names
    }


@api.get("/runs")
def list_runs(
    ctx: Ctx,
    state: Annotated[runs.RunState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    states = None if state is None else frozenset({state})
    return {"runs": [explaining.run_data(r) for r in ctx.journal.runs(states=states, limit=limit)]}


@api.get("/runs/{run_key}")
def get_run(ctx: Ctx, run_key: str) -> dict[str, Any]:
    found = ctx.journal.get_run(ids.RunKey(run_key))
    if found is None:
        raise HTTPException(404, f"no run {run_key!r} in the journal")
    return explaining.run_data(found)


@api.get("/champions")
def champions(ctx: Ctx) -> dict[str, Any]:
    models = (loaded.rule.model.registered_name for loaded in ctx.rulebook.rules.values())
    return {"champions": explaining.champions_data(models, ctx.journal)}


@api.get("/sources")
def sources(ctx: Ctx) -> dict[str, Any]:
    return {"sources": [dashboard.source_view(s) for s in ctx.board.all()]}


# --- mutating API: the token is required ------------------------------------------------------------
@api.post("/rules/{rule}/trigger", status_code=202, dependencies=[Depends(require_token)])
def trigger(ctx: Ctx, rule: str, request: TriggerRequest | None = None) -> dict[str, Any]:
    """Journal a manual trigger; the daemon answers it on its next pass, like ``retrain trigger``."""
    body = request or TriggerRequest()
    try:
        request_id = operating.request_trigger(
            ctx.journal,
            ctx.rulebook.rules,
            rule,
            reason=body.reason,
            actor=f"api:{body.actor}",
            at=ctx.clock(),
            s3_configured=ctx.s3_configured,
        )
    except operating.UnknownRule as exc:
        raise HTTPException(404, str(exc)) from exc
    except operating.TriggerRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    except errors.TemporaryError as exc:
        raise HTTPException(503, str(exc)) from exc
    log.info("manual_trigger_requested", rule=rule, actor=body.actor, reason=body.reason)
    return {"rule": rule, "request": request_id, "note": "the daemon answers it on its next pass"}


class PauseRequest(_ActionRequest):
    reason: str = pydantic.Field(default="paused through the API", min_length=1, max_length=500)


def _set_paused(ctx: Context, rule: str, body: PauseRequest, *, paused: bool) -> dict[str, Any]:
    try:
        changed = operating.set_paused(
            ctx.journal,
            ctx.rulebook.rules,
            rule,
            paused=paused,
            reason=body.reason,
            actor=f"api:{body.actor}",
            at=ctx.clock(),
        )
    except operating.UnknownRule as exc:
        raise HTTPException(404, str(exc)) from exc
    except errors.TemporaryError as exc:
        raise HTTPException(503, str(exc)) from exc
    log.info("rule_paused" if paused else "rule_resumed", rule=rule, actor=body.actor, changed=changed)
    return {"rule": rule, "paused": explaining.pause_data(ctx.journal.pause_of(rule)), "changed": changed}


@api.post("/rules/{rule}/pause", dependencies=[Depends(require_token)])
def pause(ctx: Ctx, rule: str, request: PauseRequest | None = None) -> dict[str, Any]:
    """Pause a rule like ``retrain pause``: it decides nothing and refuses manual triggers until resumed."""
    return _set_paused(ctx, rule, request or PauseRequest(), paused=True)


@api.post("/rules/{rule}/resume", dependencies=[Depends(require_token)])
def resume(ctx: Ctx, rule: str, request: PauseRequest | None = None) -> dict[str, Any]:
    """Resume a paused rule like ``retrain resume``."""
    return _set_paused(ctx, rule, request or PauseRequest(reason="resumed through the API"), paused=False)


class CancelRequest(_ActionRequest):
    reason: str = pydantic.Field(default="cancelled through the API", min_length=1, max_length=500)


@api.post("/runs/{run_key}/cancel", status_code=202, dependencies=[Depends(require_token)])
def cancel(ctx: Ctx, run_key: str, request: CancelRequest | None = None) -> dict[str, Any]:
    """Stop an active run like ``retrain cancel``; its end is recorded on the next poll."""
    body = request or CancelRequest()
    if ctx.launcher is None:
        raise HTTPException(409, "this daemon has no launcher to cancel with")
    try:
        ctx.journal.assert_leader()  # a standby refuses, naming the leader: only the leader acts on runs
        status = operating.cancel_run(ctx.journal, ctx.launcher, run_key, reason=body.reason, actor=f"api:{body.actor}")
    except errors.NotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except errors.TemporaryError as exc:
        raise HTTPException(503, str(exc)) from exc
    except errors.RetrainError as exc:
        raise HTTPException(409, str(exc)) from exc
    log.info("run_cancel_requested", run_key=run_key, actor=body.actor, reason=body.reason)
    return {"run_key": run_key, "state": status.state.value, "note": "its end is recorded on the next poll"}


@api.post("/models/{model}/rollback", dependencies=[Depends(require_token)])
def rollback(ctx: Ctx, model: str, request: RollbackRequest | None = None) -> dict[str, Any]:
    """Move the champion alias back, like ``retrain rollback``."""
    body = request or RollbackRequest()
    try:
        ctx.journal.assert_leader()  # before the alias moves: a standby refuses, naming the leader
        done = operating.rollback(
            ctx.registry,
            ctx.journal,
            model,
            to_version=body.to,
            reason=body.reason,
            actor=f"api:{body.actor}",
            at=ctx.clock(),
        )
    except errors.TemporaryError as exc:
        raise HTTPException(503, str(exc)) from exc
    except errors.InvalidRequest as exc:
        raise HTTPException(400, str(exc)) from exc
    except errors.NotFound as exc:
        status = 409 if body.to is not None else 404  # a version that does not exist vs. an unknown model
        raise HTTPException(status, str(exc)) from exc
    except errors.RetrainError as exc:
        raise HTTPException(409, str(exc)) from exc
    log.info("champion_rolled_back", model=model, previous=done.previous, target=done.target, actor=done.actor)
    return {"model": model, "previous": done.previous, "champion": done.target, "actor": done.actor}


def _docs_page(schema: dict[str, Any]) -> str:
    """The API reference as one self-contained HTML page, from the OpenAPI document (FastAPI's own ``/docs``
    loads Swagger UI from a CDN; the daemon serves everything itself)."""
    rows = []
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method, operation in operations.items():
            params = ", ".join(p["name"] for p in operation.get("parameters", []))
            text = html.escape(str(operation.get("description") or operation.get("summary") or ""))
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(params)}</td><td>{text}</td></tr>"
            )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>retrain-daemon {html.escape(__version__)} API</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}</style></head><body>"
        f"<h1>retrain-daemon {html.escape(__version__)}: HTTP API</h1>"
        '<p>Every error answers <code>{"detail": "..."}</code>. The machine-readable document is '
        "<a href='/openapi.json'>/openapi.json</a>. Mutating endpoints need "
        "<code>Authorization: Bearer &lt;http.api_token&gt;</code>.</p>"
        "<table><tr><th>method</th><th>path</th><th>parameters</th><th>what it does</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    """A request FastAPI refused (a query value out of range...): ``{"detail": "..."}`` like every error."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()
    )
    return JSONResponse({"detail": problems}, status_code=422)


def create_app(context: Context) -> FastAPI:
    """The application serving ``context``."""
    app = FastAPI(title="retrain-daemon", version=__version__, docs_url=None, redoc_url=None)
    app.state.context = context
    app.include_router(service)
    app.include_router(api)
    app.include_router(pages.pages)
    app.mount("/static", pages.static_files(), name="static")
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()))

    return app
