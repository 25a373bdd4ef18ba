"""The ASGI application: routes only, the logic lives in the adapters they call."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from daemon import __version__
from daemon.sources import webhook


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


def create_app(*, receiver: webhook.WebhookReceiver) -> FastAPI:
    """The application serving the webhook."""
    app = FastAPI(title="retrain-daemon", version=__version__, docs_url=None, redoc_url=None)

    @app.post("/events/minio")
    async def minio_events(request: Request) -> Response:
        body = await _read_limited(request, receiver.max_body_bytes)
        reply = receiver.handle(authorization=request.headers.get("authorization"), body=body)
        return JSONResponse(status_code=reply.status, content=reply.body)

    return app
