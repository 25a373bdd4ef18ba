"""S3 reconcile against the real S3 server (SeaweedFS): exact counts, odd keys, outages."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import errors, settings
from daemon.journal import sqlite
from daemon.model import events
from daemon.rules import loading
from daemon.runtime import supervising
from daemon.sources import base, datasets, reconciling, s3
from tests.support import services
from tests.support.sim import make_rule

pytestmark = pytest.mark.services


def now() -> datetime:
    return datetime.now(UTC)


def store_for(server: services.S3Server) -> s3.S3Store:
    config = settings.S3Settings(
        endpoint=server.endpoint, secure=False, access_key=server.access_key, secret_key=server.secret_key
    )
    return s3.S3Store(s3.make_client(config), endpoint=server.endpoint)


@pytest.fixture
def journal() -> Iterator[sqlite.SqliteJournal]:
    j = sqlite.SqliteJournal(":memory:")
    yield j
    j.close()


def reconciler(
    server: services.S3Server, bucket: str, journal: sqlite.SqliteJournal, prefix: str = "pets/"
) -> reconciling.S3Reconciler:
    location = datasets.DatasetLocation(name="pets", source=f"s3://{bucket}/{prefix}", bucket=bucket, prefix=prefix)
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=now)
    return reconciling.S3Reconciler(store=store_for(server), location=location, sink=sink, clock=now)


def put(server: services.S3Server, bucket: str, key: str, body: bytes) -> None:
    server.client().put_object(bucket, key, io.BytesIO(body), length=len(body))


def test_500_uploads_during_reconcile_give_exactly_500_entries(
    s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    rec = reconciler(s3_server, s3_bucket, journal)

    def upload() -> None:
        for i in range(500):
            put(s3_server, s3_bucket, f"pets/labels/train/{i:04d}.txt", f"{i % 3} 0.5 0.5 0.1 0.1\n".encode())

    uploader = threading.Thread(target=upload)
    uploader.start()
    while uploader.is_alive():
        rec.run_once()
    uploader.join()
    rec.run_once()
    inventory = list(journal.inventory("pets"))
    assert len(inventory) == 500
    assert journal.event_count() == 500
    assert {i.item for i in inventory} == {events.ItemKind.LABEL}
    # Class counts were read from the objects' contents.
    counts = journal.rule_state(make_rule(), now=now()).pending.class_counts
    assert dict(counts) == {"0": 167, "1": 167, "2": 166}

    # The same content again: same etags, no events.
    for i in range(0, 500, 50):
        put(s3_server, s3_bucket, f"pets/labels/train/{i:04d}.txt", f"{i % 3} 0.5 0.5 0.1 0.1\n".encode())
    assert rec.run_once().new_events == 0
    assert journal.event_count() == 500

    # Changed content: changed events; deletes: deleted events.
    put(s3_server, s3_bucket, "pets/labels/train/0001.txt", b"2 0.1 0.1 0.1 0.1\n")
    for i in range(10, 20):
        s3_server.client().remove_object(s3_bucket, f"pets/labels/train/{i:04d}.txt")
    result = rec.run_once()
    assert (result.created, result.changed, result.deleted) == (0, 1, 10)
    assert len(list(journal.inventory("pets"))) == 490
    status = rec.sink.board.get(rec.name)
    assert status.connected and status.last_reconcile_at is not None and status.reconcile_lag_s is not None


ODD_KEYS = [
    "pets/labels/train/with space.txt",
    "pets/labels/train/plus+sign.txt",
    "pets/labels/train/percent%20literal.txt",
    "pets/labels/train/ünïcödé-猫.txt",
    "pets/labels/train/a/b/c/d/e/deep.txt",
    "pets/images/train/photo (1).jpg",
]


def test_odd_keys_round_trip_from_listing_and_reads(
    s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    for key in ODD_KEYS:
        put(s3_server, s3_bucket, key, b"0 0.5 0.5 0.2 0.2\n")
    rec = reconciler(s3_server, s3_bucket, journal)
    rec.run_once()
    keys = sorted(i.key for i in journal.inventory("pets"))
    assert keys == sorted(k.removeprefix("pets/") for k in ODD_KEYS)
    store = store_for(s3_server)
    for key in keys:  # every journaled key reads back: no NoSuchKey
        assert store.read_text(s3_bucket, "pets/" + key) == "0 0.5 0.5 0.2 0.2\n"
    assert journal.labels_without_counts("pets", limit=100) == []


def test_a_missing_bucket_is_a_permanent_error(s3_server: services.S3Server, journal: sqlite.SqliteJournal) -> None:
    rec = reconciler(s3_server, "no-such-bucket-here", journal)
    with pytest.raises(errors.PermanentError, match="NoSuchBucket"):
        rec.run_once()
    assert journal.event_count() == 0


def test_s3_outage_loses_nothing(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    """Stop the S3 server, keep uploading nothing can see, restart it: the next reconcile catches up."""
    server = services.S3Server(workdir=tmp_path / "s3").start()
    try:
        server.client().make_bucket("data")
        for i in range(20):
            put(server, "data", f"pets/labels/train/a{i}.txt", b"0 0.5 0.5 0.2 0.2\n")
        rec = reconciler(server, "data", journal)
        assert rec.run_once().created == 20

        server.stop()
        with pytest.raises(errors.TemporaryError, match="S3 at 127.0.0.1"):
            rec.run_once()
        status = rec.sink.board.get(rec.name)
        assert not status.connected and status.gaps == 1
        assert len(list(journal.inventory("pets"))) == 20  # nothing was taken back

        server.start()
        for i in range(20, 35):
            put(server, "data", f"pets/labels/train/a{i}.txt", b"1 0.5 0.5 0.2 0.2\n")
        server.client().remove_object("data", "pets/labels/train/a0.txt")
        result = rec.run_once()
        assert (result.created, result.deleted) == (15, 1)
        listed = sorted(
            o.object_name.removeprefix("pets/") for o in server.client().list_objects("data", recursive=True)
        )
        assert sorted(i.key for i in journal.inventory("pets")) == listed
    finally:
        server.stop()


def test_label_files_are_read_only_for_rules_that_use_class_counts_then_many_at_a_time(
    s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    for i in range(40):
        put(s3_server, s3_bucket, f"pets/labels/train/{i:03d}.txt", f"{i % 2} 0.5 0.5 0.1 0.1\n".encode())
    needed = False
    rec = reconciler(s3_server, s3_bucket, journal)
    rec.counts_needed = lambda: needed
    assert rec.run_once().created == 40
    assert len(journal.labels_without_counts("pets", limit=100)) == 40  # no rule needs them: not one GET
    needed = True  # a rule with min_per_class or class_drift arrived
    s3_server.client().remove_object(s3_bucket, "pets/labels/train/039.txt")  # gone before it is read
    assert rec.count_labels() == (40, 40)
    assert journal.labels_without_counts("pets", limit=100) == []
    counts = journal.rule_state(make_rule(), now=now()).pending.class_counts
    assert dict(counts) == {"0": 20, "1": 19}  # the vanished file counts as no boxes


def test_the_supervisor_knows_which_datasets_need_class_counts() -> None:
    text = """
name: {name}
dataset: {{source: "s3://datasets/{name}/"}}
model: {{registered_name: {name}-detector}}
triggers:
  - new_labels: {trigger}
{extra}"""
    found = {}
    for name, trigger, extra in (
        ("plain", "{min_new_labels: 5}", ""),
        ("classy", "{min_new_labels: 5, min_per_class: {'0': 3}}", ""),
        ("drifty", "{min_new_labels: 5}", "  - class_drift: {statistic: jensen_shannon, threshold: 0.2}\n"),
    ):
        [loaded] = loading.parse_text(text.format(name=name, trigger=trigger, extra=extra), file="r.yaml").rules
        found[name] = loaded.rule
    sink = base.EventSink(journal=sqlite.SqliteJournal(":memory:"), board=base.StatusBoard(), clock=now)
    supervisor = supervising.SourceSupervisor(config=settings.load(environ={}), sink=sink, store=None, clock=now)
    supervisor.sync(found)
    assert {name: supervisor.counts_needed(name) for name in found} == {"plain": False, "classy": True, "drifty": True}


def test_labels_notified_by_webhook_are_counted_without_waiting_for_a_reconcile(
    s3_server: services.S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    import httpx

    from daemon import reactor
    from tests.support import minio
    from tests.support.waiting import wait_until

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "pets.yaml").write_text(
        f"""name: pets
dataset: {{source: "s3://{s3_bucket}/pets/"}}
model: {{registered_name: pets-detector}}
triggers:
  - new_labels: {{min_new_labels: 100, min_per_class: {{'1': 100}}}}
"""
    )
    config = settings.load(
        environ=s3_server.daemon_env(),
        overrides=[
            f"journal.path={tmp_path / 'journal.db'}",
            f"rules.path={rules_dir}",
            *s3_server.daemon_overrides(),
            "sources.reconcile_interval_s=3600",  # no reconcile comes to read them
            f"sources.webhook_token={minio.TOKEN}",
            "http.port=0",
        ],
    )
    daemon = reactor.Reactor(config, dry_run=True)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert daemon.started.wait(30)
        board = daemon.parts.board
        wait_until(lambda: board.get("s3_reconcile:pets").last_reconcile_at is not None, 30, "the first reconcile")
        client = s3_server.client()
        objects = {}
        for i in range(3):
            key = f"pets/labels/train/{i}.txt"
            put(s3_server, s3_bucket, key, b"1 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n")
            stat = client.stat_object(s3_bucket, key)
            objects[key] = (stat.etag, stat.size)
        reply = httpx.post(
            f"http://127.0.0.1:{daemon.http_port}/events/minio",
            json=minio.body_of(objects, bucket=s3_bucket),
            headers={"Authorization": f"Bearer {minio.TOKEN}"},
        )
        assert reply.status_code == 200 and reply.json()["journaled"] == 3, reply.text
        [loaded] = daemon.rulebook.rules.values()

        def counted() -> dict[str, int]:
            return dict(daemon.journal.rule_state(loaded.rule, now=now()).pending.class_counts)

        wait_until(lambda: counted() == {"1": 6}, 15, "the notified labels' class counts")
    finally:
        daemon.stop()
        thread.join(30)


def test_a_large_prefix_is_reconciled_in_shards_across_passes(
    s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    """A pass lists at most ``shard_objects`` objects and merges them with that key range of the inventory
    alone; the next pass goes on after the last key, and a cycle ends when the listing does. A deletion is
    reported by the pass whose range holds the key, never by one that did not list that far."""
    for i in range(20):
        put(s3_server, s3_bucket, f"pets/labels/train/{i:03d}.txt", b"0 0.5 0.5 0.1 0.1\n")
    rec = reconciler(s3_server, s3_bucket, journal)
    rec.shard_objects = 7
    passes = [rec.run_once() for _ in range(3)]
    assert [(p.created, p.complete) for p in passes] == [(7, False), (7, False), (6, True)]
    assert len(list(journal.inventory("pets"))) == 20

    client = s3_server.client()
    client.remove_object(s3_bucket, "pets/labels/train/002.txt")
    client.remove_object(s3_bucket, "pets/labels/train/015.txt")
    put(s3_server, s3_bucket, "pets/labels/train/099.txt", b"1 0.5 0.5 0.1 0.1\n")
    first = rec.run_once()  # lists 000-001, 003-007: 002 is gone, 015 lies beyond its range
    assert (first.created, first.deleted, first.complete) == (0, 1, False)
    assert "labels/train/015.txt" in {i.key for i in journal.inventory("pets")}
    second, third = rec.run_once(), rec.run_once()  # 008-014, then 016-019 and 099
    assert (second.created, second.deleted, second.complete) == (0, 0, False)
    assert (third.created, third.deleted, third.complete) == (1, 1, True)
    assert sorted(i.key for i in journal.inventory("pets")) == [
        f"labels/train/{i:03d}.txt" for i in [*range(20), 99] if i not in (2, 15)
    ]
    # Unsharded, one pass is a cycle.
    rec.shard_objects = 0
    whole = rec.run_once()
    assert (whole.created, whole.deleted, whole.complete) == (0, 0, True)


def test_the_shard_size_is_a_setting_the_supervisor_passes_on(
    s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    """``sources.reconcile_shard_objects`` from the environment: the supervisor's passes list that many objects
    each, and say there is more until the cycle ends."""
    from daemon.runtime import working

    for i in range(5):
        put(s3_server, s3_bucket, f"pets/labels/train/{i:03d}.txt", b"0 0.5 0.5 0.1 0.1\n")
    config = settings.load(environ={"RETRAIN_SOURCES__RECONCILE_SHARD_OBJECTS": "2"})
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=now)
    supervisor = supervising.SourceSupervisor(config=config, sink=sink, store=store_for(s3_server), clock=now)
    text = f"""name: pets
dataset: {{source: "s3://{s3_bucket}/pets/"}}
model: {{registered_name: pets-detector}}
triggers:
  - new_labels: {{min_new_labels: 5}}
"""
    [loaded] = loading.parse_text(text, file="pets.yaml").rules
    supervisor.sync({"pets": loaded.rule})
    supervisor.work()
    listed = []
    for _ in range(3):
        more = supervisor.reconcile()
        listed.append((len(list(journal.inventory("pets"))), more))
    assert listed == [(2, working.MORE), (4, working.MORE), (5, None)]


def test_a_shard_whose_listing_fails_is_listed_again(
    tmp_path: Path, s3_server: services.S3Server, s3_bucket: str, journal: sqlite.SqliteJournal
) -> None:
    for i in range(10):
        put(s3_server, s3_bucket, f"pets/labels/train/{i:03d}.txt", b"0 0.5 0.5 0.1 0.1\n")
    rec = reconciler(s3_server, s3_bucket, journal)
    rec.shard_objects = 4
    assert rec.run_once().created == 4
    real = rec.store

    class Down:
        def list(self, *args: object, **kwargs: object) -> Iterator[s3.ObjectInfo]:
            raise errors.TemporaryError("S3 unreachable")

    rec.store = Down()  # type: ignore[assignment]
    with pytest.raises(errors.TemporaryError):
        rec.run_once()
    rec.store = real
    resumed = rec.run_once()
    assert (resumed.created, resumed.complete) == (4, False)  # 004-007: the failed shard, not a new cycle
