"""MinIO bucket notification bodies, built from MinIO's real sample (tests/data/events/)."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any
from urllib.parse import quote_plus

from tests.support.paths import DATA

#: The bearer token tests configure for the webhook.
TOKEN = "test-token-" + "x" * 24


@cache
def sample() -> dict[str, Any]:
    """MinIO's real PUT notification body, unmodified."""
    loaded: dict[str, Any] = json.loads((DATA / "events" / "minio-put-sample.json").read_text())
    return loaded


def body_for(
    *keys: str, name: str = "s3:ObjectCreated:Put", etag: str | None = "abc123", bucket: str | None = None
) -> dict[str, Any]:
    """The real sample MinIO body, with its record repeated for each (URL-encoded, as MinIO sends) key."""
    document = copy.deepcopy(sample())
    template = document["Records"][0]
    records = []
    for key in keys:
        record = copy.deepcopy(template)
        record["eventName"] = name
        record["s3"]["object"]["key"] = quote_plus(key)
        if bucket is not None:
            record["s3"]["bucket"]["name"] = bucket
        if etag is None:
            record["s3"]["object"].pop("eTag")
            record["s3"]["object"].pop("size")
        else:
            record["s3"]["object"]["eTag"] = f"{etag}-{key}"
        records.append(record)
    document["Records"] = records
    return document


def body_of(objects: dict[str, tuple[str, int]], *, bucket: str) -> dict[str, Any]:
    """MinIO's PUT notification for objects that really are in the bucket: key -> (etag, size)."""
    document = copy.deepcopy(sample())
    template = document["Records"][0]
    records = []
    for key, (etag, size) in objects.items():
        record = copy.deepcopy(template)
        record["eventName"] = "s3:ObjectCreated:Put"
        record["s3"]["bucket"]["name"] = bucket
        record["s3"]["object"]["key"] = quote_plus(key)
        record["s3"]["object"]["eTag"] = etag
        record["s3"]["object"]["size"] = size
        records.append(record)
    document["Records"] = records
    return document
