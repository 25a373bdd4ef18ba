"""The MinIO webhook on a real HTTP server: tokens, limits, malformed bodies, odd keys, idempotency, fuzz."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.journal import sqlite
from daemon.sources import base, datasets, webhook
from tests.support import apps, minio, services
from tests.support.minio import TOKEN, body_for

SAMPLE = minio.sample()
LOCATIONS = {
    "pets": datasets.DatasetLocation(name="pets", source="s3://images/pets/", bucket="images", prefix="pets/"),
}


def make_receiver(journal: sqlite.SqliteJournal, *, max_body_bytes: int = 64 * 1024) -> webhook.WebhookReceiver:
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    return webhook.WebhookReceiver(token=TOKEN, max_body_bytes=max_body_bytes, sink=sink, locations=lambda: LOCATIONS)


@pytest.fixture
def journal() -> Iterator[sqlite.SqliteJournal]:
    j = sqlite.SqliteJournal(":memory:")
    yield j
    j.close()


@pytest.fixture
def served(journal: sqlite.SqliteJournal) -> Iterator[tuple[str, webhook.WebhookReceiver]]:
    """The app on a real uvicorn server on 127.0.0.1."""
    receiver = make_receiver(journal)
    port = services.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            apps.app_for(receiver.sink.journal, receiver=receiver), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/events/minio", receiver
    server.should_exit = True
    thread.join(10)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_events_are_journaled_before_the_2xx(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal
) -> None:
    url, _ = served
    keys = ["pets/labels/train/a.txt", "pets/images/train/a.jpg"]
    response = httpx.post(url, json=body_for(*keys), headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"journaled": 2, "duplicates": 0, "ignored": 0}
    assert sorted(i.key for i in journal.inventory("pets")) == ["images/train/a.jpg", "labels/train/a.txt"]
    # MinIO retries deliveries: the same body again is accepted and changes nothing.
    again = httpx.post(url, json=body_for(*keys), headers=AUTH)
    assert again.json() == {"journaled": 0, "duplicates": 2, "ignored": 0}
    assert journal.event_count() == 2


def test_the_unmodified_minio_sample_is_accepted_and_ignored(served: tuple[str, webhook.WebhookReceiver]) -> None:
    """The sample's key (images/myphoto.jpg in bucket images) lies outside every dataset prefix."""
    url, _ = served
    response = httpx.post(url, json=SAMPLE, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["ignored"] == 1


def test_odd_keys_are_url_decoded(served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal) -> None:
    url, _ = served
    keys = [
        "pets/labels/train/with space.txt",
        "pets/labels/train/plus+sign.txt",
        "pets/labels/train/percent%20literal.txt",
        "pets/labels/train/ünïcödé-猫.txt",
        "pets/labels/train/a/b/c/deep.txt",
    ]
    assert httpx.post(url, json=body_for(*keys), headers=AUTH).status_code == 200
    assert sorted(i.key for i in journal.inventory("pets")) == sorted(k.removeprefix("pets/") for k in keys)


def test_delete_events_without_etag(served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal) -> None:
    url, _ = served
    httpx.post(url, json=body_for("pets/labels/train/a.txt", "pets/labels/train/b.txt"), headers=AUTH)
    removed = body_for("pets/labels/train/a.txt", name="s3:ObjectRemoved:Delete", etag=None)
    response = httpx.post(url, json=removed, headers=AUTH)
    assert response.json() == {"journaled": 1, "duplicates": 0, "ignored": 0}
    assert [i.key for i in journal.inventory("pets")] == ["labels/train/b.txt"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": f"Basic {TOKEN}"}, 401), (AUTH, 200)],
)
def test_tokens_are_enforced(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal, headers: dict[str, str], status: int
) -> None:
    url, _ = served
    response = httpx.post(url, json=body_for("pets/labels/train/a.txt"), headers=headers)
    assert response.status_code == status
    assert journal.event_count() == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b'{"EventName": "s3:ObjectCreated:Put"}', "no 'Records' list"),
        (b'{"Records": [42]}', "record 0: not an object"),
        (
            b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "eventTime": "2026-01-01T00:00:00Z"}]}',
            "record 0: s3.bucket.name or s3.object.key is missing",
        ),
    ],
)
def test_malformed_bodies_get_400_and_journal_nothing(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal, content: bytes, message: str
) -> None:
    url, receiver = served
    response = httpx.post(url, content=content, headers=AUTH)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert journal.event_count() == 0
    assert receiver.sink.board.get("webhook").rejected == 1


def test_a_record_missing_its_etag_rejects_the_whole_body(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal
) -> None:
    url, _ = served
    document = body_for("pets/labels/train/a.txt", "pets/labels/train/b.txt")
    del document["Records"][1]["s3"]["object"]["eTag"]
    response = httpx.post(url, json=document, headers=AUTH)
    assert response.status_code == 400
    assert "record 1: s3.object.eTag is missing" in response.json()["detail"]
    assert journal.event_count() == 0


def test_oversized_bodies_get_413(served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal) -> None:
    url, _ = served
    big = json.dumps(body_for(*(f"pets/labels/train/{i:05d}.txt" for i in range(2000)))).encode()
    assert len(big) > 64 * 1024
    assert httpx.post(url, content=big, headers=AUTH).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    assert httpx.post(url, content=chunks(), headers=AUTH).status_code == 413
    assert httpx.post(url, content=big, headers={}).status_code == 401
    assert journal.event_count() == 0


def test_journal_unavailable_gives_503_so_minio_retries(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal
) -> None:
    url, _ = served
    journal.close()
    response = httpx.post(url, json=body_for("pets/labels/train/a.txt"), headers=AUTH)
    assert response.status_code == 503


def post_in_process(receiver: webhook.WebhookReceiver, content: bytes) -> httpx.Response:
    app = apps.app_for(receiver.sink.journal, receiver=receiver)
    return apps.request(app, "POST", "/events/minio", content=content, headers=AUTH)


def test_webhook_disabled_without_a_token(journal: sqlite.SqliteJournal) -> None:
    receiver = make_receiver(journal)
    receiver.token = None
    assert post_in_process(receiver, json.dumps(SAMPLE).encode()).status_code == 404


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _record_with(key: str, size: object, etag: object) -> dict[str, object]:
    body = body_for("pets/labels/train/x.txt")
    record = body["Records"][0]
    record["s3"]["object"].update(key=key, size=size, eTag=etag)
    return body


#: MinIO-shaped records with hostile fields: any key (lone surrogates, percent escapes, NUL), any size.
hostile_records = st.builds(
    _record_with,
    key=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40).map(
        lambda k: "pets/labels/" + k
    )
    | st.from_regex(r"pets/labels/(%[0-9A-Fa-f]{2}|[a-z+]){1,12}\.txt", fullmatch=True),
    size=st.integers(min_value=-(2**70), max_value=2**70) | st.none() | st.text(max_size=3),
    etag=st.text(max_size=12) | st.none() | st.integers(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"Records": st.lists(json_values, max_size=3)}).map(lambda v: json.dumps(v).encode()),
        hostile_records.map(lambda v: json.dumps(v, ensure_ascii=True).encode()),
    )
)
def test_fuzzed_bodies_never_crash_the_served_webhook(
    served: tuple[str, webhook.WebhookReceiver], journal: sqlite.SqliteJournal, payload: bytes
) -> None:
    """Random bodies against the real uvicorn server: 200 or 400, never a 5xx (MinIO would retry it forever);
    a refused body journals nothing, an accepted one exactly what it says it journaled."""
    url, _ = served
    before = journal.event_count()
    response = httpx.post(url, content=payload, headers=AUTH, timeout=10)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert journal.event_count() == before
    else:
        assert journal.event_count() == before + response.json()["journaled"]
