"""Serving HTTP: probes, metrics, the MinIO webhook and the JSON API, on uvicorn in its own thread.

The port is bound before anything else starts, so a taken port fails ``retrain up`` with a message naming
it instead of a log line from a thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from daemon import errors, logs, settings
from daemon.http import app as http_app
from daemon.runtime import wiring
from daemon.sources import datasets, webhook

log = logs.get_logger(__name__)


def context(
    config: settings.Settings,
    parts: wiring.Parts,
    locations: Callable[[], Mapping[str, datasets.DatasetLocation]],
) -> http_app.Context:
    """What the endpoints read and act on, from the daemon's parts (``locations``: the watched datasets)."""
    token, api_token = config.sources.webhook_token, config.http.api_token
    return http_app.Context(
        journal=parts.journal,
        rulebook=parts.rulebook,
        board=parts.board,
        metrics=parts.metrics,
        registry=parts.mlflow,
        receiver=webhook.WebhookReceiver(
            token=token.get_secret_value() if token else None,
            max_body_bytes=config.sources.webhook_max_body_bytes,
            sink=parts.sink,
            locations=locations,
        ),
        api_token=api_token.get_secret_value() if api_token else None,
        clock=parts.clock,
        since_last_pass=parts.liveness.since_last_pass,
        liveness_timeout_s=config.http.liveness_timeout_s,
        s3_configured=config.sources.s3.endpoint is not None,
        launcher=parts.launcher,
        progress=parts.progress,
        mlflow_ui_url=config.mlflow.ui_url,
    )


class HttpServer:
    """The daemon's HTTP server.

    Args:
        config: the ``http`` settings.
        context: what the endpoints read and act on.
        webhook_on: whether the MinIO webhook has a token (for the start-up line).
    """

    def __init__(self, *, config: settings.HttpSettings, context: http_app.Context, webhook_on: bool) -> None:
        self.config = config
        self.context = context
        self.webhook_on = webhook_on
        self.port: int | None = None
        """The port listened on, once :meth:`start` returned."""
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port and serve in a thread. Raises :class:`~daemon.errors.ConfigError` when it is taken."""
        import uvicorn

        http = self.config
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((http.host, http.port))
        except OSError as exc:
            sock.close()
            raise errors.ConfigError(
                f"cannot listen on {http.host}:{http.port}: {exc.strerror or exc}; choose another http.port "
                "(RETRAIN_HTTP__PORT) or stop what uses it",
                field="http.port",
            ) from exc
        self.port = int(sock.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(http_app.create_app(self.context), log_level="warning", access_log=False, lifespan="off")
        )
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        self._thread.start()
        self._server = server
        self._socket = sock
        log.info(
            "http_listening",
            host=http.host,
            port=self.port,
            webhook="on" if self.webhook_on else "off (set sources.webhook_token)",
            api_writes="on" if self.context.api_token else "off (set http.api_token)",
        )

    def stop(self, timeout_s: float) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._socket is not None:
            self._socket.close()
