"""Logging: structlog, configured once by the CLI.

JSON lines when the output is not a terminal (a pod), readable console output when it is (a laptop).
Context that belongs to a unit of work (``rule``, ``run_key``, ``event_id``) is bound with
:func:`bound` and appears on every line logged inside it. Libraries that log through the standard
``logging`` module (kfp, mlflow, urllib3) come out through the same renderer.

Event names are stable snake_case (``rule_file_rejected``), data goes in fields. Values under keys that
look like credentials are replaced before rendering, and so are credentials written inside URIs anywhere in
a line, as a last line of defence: secrets should never be passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from daemon import redaction
from daemon import settings as settings_mod

_SECRET_KEY = re.compile(r"(token|secret|password|passwd|access_key|authorization|credential)", re.I)
_MASK = "**********"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the value of any field whose name looks like a credential."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key) and event_dict[key] is not None:
            event_dict[key] = _MASK
    return event_dict


def redact_uris(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: credentials written inside URIs (``http://user:pw@host``) and query strings are
    replaced in every value, tracebacks included (a library's message may quote its URI)."""
    for key, value in event_dict.items():
        if isinstance(value, str | list | dict):
            event_dict[key] = redaction.redact_tree(value)
    return event_dict


def _add_module(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For standard-library records: name the emitting module like the daemon's own lines do."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict["module"] = record.name
    return event_dict


def _wants_json(config: settings_mod.LoggingSettings, stream: TextIO) -> bool:
    if config.format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (callable(isatty) and isatty())
    return config.format == "json"


class _LineWriter:
    """structlog's output: each line written whole, in one call, under the lock of the standard library's
    handler on the same stream. (structlog's PrintLogger writes a line and its newline in two calls under a
    lock of its own, so a library's line from another thread could land between them: broken JSON lines.)"""

    def __init__(self, stream: TextIO, lock: threading.RLock) -> None:
        self._stream = stream
        self._lock = lock

    def msg(self, message: str) -> None:
        with self._lock:
            self._stream.write(message + "\n")
            self._stream.flush()

    log = debug = info = warn = warning = err = error = critical = fatal = exception = failure = msg


def configure(config: settings_mod.LoggingSettings, *, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library's logging for this process.

    Called once by the CLI before anything logs. Calling it again replaces the configuration (tests do).

    Args:
        config: level and format.
        stream: where lines go; standard error by default, so that commands' own output on standard
            output stays clean for pipes.
    """
    out = stream if stream is not None else sys.stderr
    level = _LEVELS[config.level]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: structlog.typing.Processor
    if _wants_json(config, out):
        shared += [structlog.processors.dict_tracebacks, redact_uris]
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        shared += [structlog.processors.format_exc_info, redact_uris]
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    # Libraries log through the standard library: send them through the same renderer, quieter by one step
    # so that kfp's and mlflow's chatter does not drown the daemon's own lines. One lock for both writers.
    handler = logging.StreamHandler(out)
    lock = threading.RLock()
    handler.lock = lock
    writer = _LineWriter(out, lock)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: writer,
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[_add_module, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """The logger of a module: ``log = logs.get_logger(__name__)``."""
    # A lazy proxy: it picks up the configuration in force when it first logs, not at import time.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(module=name)
    return logger


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Bind ``rule``, ``run_key``, ``event_id`` (or any field) to every line logged inside the block."""
    with structlog.contextvars.bound_contextvars(**context):
        yield
