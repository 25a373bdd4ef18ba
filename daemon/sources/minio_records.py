"""MinIO bucket notification records -> source events (shared by the webhook and the listen stream).

The body format is S3's event message (see tests/data/events/minio-put-sample.json): ``Records`` with
``eventName``, ``eventTime`` and ``s3.bucket.name`` / ``s3.object.{key,size,eTag}``. Keys are URL-encoded
(``unquote_plus``: ``+`` is a space, ``%2B`` a plus). Delete records carry no etag. Records of other event
types (``s3:ObjectAccessed:*``) and keys outside every dataset are ignored, not errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from daemon import errors
from daemon.model import events
from daemon.sources import datasets


@dataclass(frozen=True, kw_only=True)
class Parsed:
    """What a notification body held."""

    events: list[events.SourceEvent]
    ignored: int


def _field(record: Mapping[str, Any], *path: str) -> Any:
    node: Any = record
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _time(text: Any, index: int) -> datetime:
    if not isinstance(text, str):
        raise errors.InvalidInput(f"record {index}: eventTime is missing")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.InvalidInput(f"record {index}: eventTime {text[:40]!r} is not an ISO time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class _Record:
    kind: events.ChangeKind
    bucket: str
    key: str
    etag: str | None
    size: int | None
    time: datetime


def _record(record: Any, index: int) -> _Record | None:
    """One record's facts, None for event types the daemon does not follow."""
    if not isinstance(record, Mapping):
        raise errors.InvalidInput(f"record {index}: not an object")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise errors.InvalidInput(f"record {index}: eventName is missing")
    bucket = _field(record, "s3", "bucket", "name")
    raw_key = _field(record, "s3", "object", "key")
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise errors.InvalidInput(f"record {index}: s3.bucket.name or s3.object.key is missing")
    moment = _time(record.get("eventTime"), index)
    if name.startswith("s3:ObjectCreated:"):
        kind = events.ChangeKind.CREATED
    elif name.startswith("s3:ObjectRemoved:"):
        kind = events.ChangeKind.DELETED
    else:
        return None
    etag = _field(record, "s3", "object", "eTag")
    size = _field(record, "s3", "object", "size")
    if kind is events.ChangeKind.CREATED and (not isinstance(etag, str) or not etag.strip('"')):
        raise errors.InvalidInput(f"record {index}: s3.object.eTag is missing on {name}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63):
        raise errors.InvalidInput(f"record {index}: s3.object.size is not an object size (0 <= size < 2**63)")
    try:
        key = unquote_plus(raw_key, errors="strict")  # a wrong byte in an escape must not become U+FFFD
    except UnicodeDecodeError as exc:
        raise errors.InvalidInput(
            f"record {index}: s3.object.key {raw_key[:200]!r}: the name is not valid UTF-8"
        ) from exc
    problem = events.key_problem(key)
    if problem is not None:
        raise errors.InvalidInput(f"record {index}: s3.object.key {events.escaped(key)[:200]!r}: {problem}")
    return _Record(
        kind=kind,
        bucket=bucket,
        key=key,
        etag=etag.strip('"') if isinstance(etag, str) and etag.strip('"') else None,
        size=size if kind is events.ChangeKind.CREATED else None,
        time=moment,
    )


def parse(body: Any, locations: Mapping[str, datasets.DatasetLocation], *, source: events.Source) -> Parsed:
    """Turn a notification body into events for the datasets it touches.

    Raises:
        errors.InvalidInput: the body is not a notification, or a record lacks what it must have; the
            message names the record and the field. Nothing of a malformed body is used.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("Records"), list):
        raise errors.InvalidInput("body is not a bucket notification: no 'Records' list")
    by_bucket: dict[str, list[datasets.DatasetLocation]] = {}
    for location in locations.values():
        if location.bucket is not None:
            by_bucket.setdefault(location.bucket, []).append(location)
    found: list[events.SourceEvent] = []
    ignored = 0
    for index, raw in enumerate(body["Records"]):
        record = _record(raw, index)
        before = len(found)
        for location in by_bucket.get(record.bucket, []) if record is not None else []:
            assert record is not None
            rel = location.relative(record.key)
            item = location.classify(rel) if rel is not None else events.ItemKind.OTHER
            if rel is None or item is events.ItemKind.OTHER:
                continue
            found.append(
                events.SourceEvent(
                    source=source,
                    dataset=location.name,
                    key=rel,
                    kind=record.kind,
                    item=item,
                    version=record.etag,
                    size=record.size,
                    time=record.time,
                )
            )
        ignored += 1 if len(found) == before else 0
    return Parsed(events=found, ignored=ignored)
