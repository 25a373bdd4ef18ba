"""The MinIO listen adapter against a local server that speaks MinIO's listen wire format.

No MinIO server runs here (SeaweedFS refuses the listen API), so this server plays MinIO's part on
127.0.0.1: newline-delimited JSON records, whitespace keep-alive lines, then a dropped connection.
The minio-py client, its request signing and its HTTP stack are the real ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from minio import Minio

from daemon.journal import sqlite
from daemon.sources import base, datasets, listening
from tests.support.minio import body_for

LOCATIONS = {
    "pets": datasets.DatasetLocation(name="pets", source="s3://images/pets/", bucket="images", prefix="pets/"),
}


class ListenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ListenHandler)
        self.connections = 0
        self.queries: list[dict[str, list[str]]] = []
        # What each connection sends, in order; the last script repeats.
        self.scripts: list[list[bytes]] = []
        self.hold_open = threading.Event()


class ListenHandler(BaseHTTPRequestHandler):
    server: ListenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.connections += 1
        self.server.queries.append(parse_qs(urlparse(self.path).query))
        script = self.server.scripts[min(self.server.connections - 1, len(self.server.scripts) - 1)]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in script:
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
            time.sleep(0.01)
        if self.server.connections >= len(self.server.scripts):
            self.server.hold_open.wait(10)  # the last connection stays open like a healthy stream
        # Returning without the final zero-length chunk drops the connection mid-stream.
        self.close_connection = True


def record_line(*keys: str) -> bytes:
    return json.dumps(body_for(*keys)).encode() + b"\n"


@pytest.fixture
def server() -> Iterator[ListenServer]:
    srv = ListenServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.hold_open.set()
    srv.shutdown()
    srv.server_close()


def test_records_keepalives_garbage_and_a_dropped_stream(server: ListenServer) -> None:
    server.scripts = [
        [
            record_line("pets/labels/train/a.txt"),
            b" \n",
            b"   \n",
            b"this is not json\n",
            record_line("pets/images/train/a.jpg", "other/ignored.txt"),
        ],
        [record_line("pets/labels/train/b.txt"), b" \n"],
    ]
    journal = sqlite.SqliteJournal(":memory:")
    board = base.StatusBoard()
    sink = base.EventSink(journal=journal, board=board, clock=lambda: datetime.now(UTC))
    gaps: list[str] = []
    client = Minio(
        f"127.0.0.1:{server.server_address[1]}", access_key="k", secret_key="s", secure=False, region="us-east-1"
    )
    listener = listening.MinioListener(
        client=client,
        endpoint="fake-minio",
        bucket="images",
        locations=lambda: LOCATIONS,
        sink=sink,
        on_gap=gaps.append,
        base_s=0.05,
        cap_s=0.2,
    )
    listener.start()
    deadline = time.monotonic() + 20
    while journal.event_count() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.stop()
    assert sorted(i.key for i in journal.inventory("pets")) == [
        "images/train/a.jpg",
        "labels/train/a.txt",
        "labels/train/b.txt",
    ]
    status = board.get(listener.name)
    assert status.gaps >= 1
    assert status.rejected == 1
    assert gaps and gaps[0] == "images"  # a reconcile was asked for after the reconnect
    assert server.connections >= 2
    query = server.queries[0]
    assert query["prefix"] == ["pets/"]
    assert sorted(query["events"]) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def test_unreachable_server_backs_off_and_stops_cleanly() -> None:
    journal = sqlite.SqliteJournal(":memory:")
    board = base.StatusBoard()
    sink = base.EventSink(journal=journal, board=board, clock=lambda: datetime.now(UTC))
    from tests.support.services import free_port

    client = Minio(f"127.0.0.1:{free_port()}", access_key="k", secret_key="s", secure=False, region="us-east-1")
    listener = listening.MinioListener(
        client=client,
        endpoint="nowhere",
        bucket="images",
        locations=lambda: LOCATIONS,
        sink=sink,
        on_gap=lambda bucket: None,
        base_s=0.01,
        cap_s=0.05,
    )
    listener.start()
    deadline = time.monotonic() + 30
    while board.get(listener.name).gaps < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.stop()
    status = board.get(listener.name)
    assert status.gaps >= 2
    assert not status.connected
    assert status.last_error is not None and "nowhere" in status.last_error
