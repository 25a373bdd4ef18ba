"""MinIO's listen API: a long-lived stream of bucket notifications, lossy by design.

MinIO streams newline-delimited JSON records on ``GET /BUCKET?events=...&prefix=...&suffix=...`` and sends
whitespace lines as keep-alives. A slow or disconnected client loses the events in between: there is no
replay. So the listener:

- runs in its own thread and reconnects with capped exponential backoff and full jitter;
- counts every lost stream as a gap, logs it, and asks for a reconcile of the bucket's datasets after
  each reconnect (the reconcile finds what the gap swallowed);
- skips malformed lines (counted), never stops on them.

minio-py's ``listen_bucket_notification`` reconnects silently when the stream closes, which would hide the
gaps, so the listener issues the same signed request through the client's request method and reads the
stream itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from minio import Minio
from minio.error import MinioException

from daemon import errors, logs, retrying
from daemon.model import events
from daemon.sources import base, datasets, minio_records

log = logs.get_logger(__name__)

#: Event types listened to.
EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
#: A stream that lived this long resets the backoff.
HEALTHY_STREAM_S = 30.0


class MinioListener:
    """Listens to one bucket and journals what it hears.

    Args:
        client: a minio client for the MinIO endpoint.
        endpoint: for messages.
        bucket: the bucket to listen to.
        locations: the current datasets (follows rule reloads).
        sink: where events go.
        on_gap: called after every reconnect that followed a lost stream (asks for a reconcile).
        base_s, cap_s: backoff between reconnects.
    """

    def __init__(
        self,
        *,
        client: Minio,
        endpoint: str,
        bucket: str,
        locations: Callable[[], Mapping[str, datasets.DatasetLocation]],
        sink: base.EventSink,
        on_gap: Callable[[str], None],
        base_s: float = 1.0,
        cap_s: float = 60.0,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.locations = locations
        self.sink = sink
        self.on_gap = on_gap
        self.delay_s = retrying.full_jitter(base_s=base_s, cap_s=cap_s)
        self.name = f"minio_listen:{bucket}"
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    def _prefix(self) -> str:
        """The longest prefix shared by the bucket's datasets (MinIO filters server-side)."""
        prefixes = [loc.prefix for loc in self.locations().values() if loc.bucket == self.bucket]
        if not prefixes:
            return ""
        shortest, longest = min(prefixes), max(prefixes)
        common = 0
        while common < len(shortest) and shortest[common] == longest[common]:
            common += 1
        return shortest[:common]

    def _open(self) -> Any:
        try:
            # The same signed request listen_bucket_notification makes, without its silent reconnects.
            return self.client._execute(
                "GET",
                self.bucket,
                query_params={"prefix": self._prefix(), "suffix": "", "events": list(EVENTS)},
                preload_content=False,
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise errors.ServiceUnavailable(service="MinIO listen", endpoint=self.endpoint, detail=str(exc)) from exc

    def _consume(self, response: Any) -> None:
        """Read records until the stream ends."""
        while not self._stopping.is_set():
            line = response.readline()
            if not line:
                return  # the server closed the stream
            text = line.strip()
            if not text:
                continue  # keep-alive
            try:
                parsed = minio_records.parse(json.loads(text), self.locations(), source=events.Source.MINIO_LISTEN)
            except (ValueError, errors.InvalidInput) as exc:
                self.sink.board.add(self.name, rejected=1)
                log.warning("listen_record_rejected", bucket=self.bucket, error=errors.truncate(str(exc)))
                continue
            self.sink.deliver(self.name, parsed.events)

    def run(self) -> None:
        """Listen until :meth:`stop`; never raises for a lost connection or a bad record."""
        attempt = 0
        lost_stream = False
        while not self._stopping.is_set():
            opened_at = time.monotonic()
            try:
                self._response = self._open()
                self.sink.board.update(self.name, connected=True, last_error=None)
                if lost_stream:
                    log.info("listen_reconnected", bucket=self.bucket, action="reconcile requested")
                    self.on_gap(self.bucket)
                self._consume(self._response)
            except (errors.RetrainError, urllib3.exceptions.HTTPError, OSError) as exc:
                if self._stopping.is_set():
                    break
                self.sink.board.update(self.name, connected=False, last_error=str(exc))
                log.warning("listen_failed", bucket=self.bucket, error=errors.truncate(str(exc)))
            finally:
                self._close()
            if self._stopping.is_set():
                break
            # The stream is gone: whatever MinIO sent meanwhile is lost until the reconcile after reconnect.
            lost_stream = True
            self.sink.board.add(self.name, gaps=1)
            self.sink.board.update(self.name, connected=False)
            attempt = 0 if time.monotonic() - opened_at > HEALTHY_STREAM_S else attempt + 1
            wait = self.delay_s(attempt)
            log.warning("listen_gap", bucket=self.bucket, retry_in_s=round(wait, 2))
            self._stopping.wait(wait)

    def _close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            try:
                response.close()
                response.release_conn()
            except Exception as exc:
                log.debug("listen_close_failed", error=str(exc))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown() if hasattr(response, "shutdown") else response.close()
            except Exception as exc:
                log.debug("listen_close_failed", error=str(exc))
        if self._thread is not None:
            self._thread.join(timeout_s)
