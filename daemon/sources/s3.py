"""The S3 adapter: minio-py behind a small interface that speaks the daemon's types and errors.

Works against any S3 API (MinIO, SeaweedFS in the tests, AWS). Library errors are translated here: an
unreachable server or a 5xx is :class:`~daemon.errors.ServiceUnavailable` (temporary), a missing bucket or
refused credentials a :class:`~daemon.errors.PermanentError`. Credentials come from the settings (the
environment) and are never logged.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from daemon import errors, settings

#: Keys per ListObjectsV2 page (S3's maximum and default).
PAGE = 1000
#: Largest label file read for class counts; bigger files are not YOLO label files.
MAX_LABEL_BYTES = 1_048_576

_TEMPORARY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


@dataclass(frozen=True, kw_only=True)
class ObjectInfo:
    key: str
    etag: str
    size: int


def make_client(config: settings.S3Settings) -> Minio:
    """A minio client for the configured endpoint.

    Raises:
        errors.ConfigError: no endpoint is configured.
    """
    if not config.endpoint:
        raise errors.ConfigError(
            "an s3:// dataset needs sources.s3.endpoint (RETRAIN_SOURCES__S3__ENDPOINT)", field="sources.s3.endpoint"
        )
    # Fail fast on an unreachable server (the caller backs off and retries; a reconcile catches up) instead of
    # minio-py's default of many retries inside one call.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=20,  # the reconciler's label readers (16) beside the listing and the listen stream
    )
    return Minio(
        config.endpoint,
        access_key=config.access_key.get_secret_value() if config.access_key else None,
        secret_key=config.secret_key.get_secret_value() if config.secret_key else None,
        secure=config.secure,
        region=config.region,
        http_client=http,
    )


class S3Store:
    """Listing and reading objects, with errors translated.

    Args:
        client: a configured minio client.
        endpoint: how to name the server in messages (host:port, never credentials).
    """

    def __init__(self, client: Minio, *, endpoint: str) -> None:
        self.client = client
        self.endpoint = endpoint

    def translate(self, exc: Exception, *, doing: str) -> errors.RetrainError:
        """Map a minio/urllib3 error to the daemon's hierarchy."""
        if isinstance(exc, S3Error):
            detail = f"{exc.code}: {exc.message}"
            if exc.code in _TEMPORARY_CODES:
                return errors.ServiceUnavailable(service="S3", endpoint=self.endpoint, detail=f"{doing}: {detail}")
            return errors.PermanentError(f"S3 at {self.endpoint} refused {doing}: {errors.truncate(detail)}")
        return errors.ServiceUnavailable(service="S3", endpoint=self.endpoint, detail=f"{doing}: {exc}")

    def list(self, bucket: str, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order, one ListObjectsV2 page at a time."""
        try:
            for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True, start_after=start_after):
                if obj.is_dir or obj.object_name is None:
                    continue
                yield ObjectInfo(key=obj.object_name, etag=(obj.etag or "").strip('"'), size=obj.size or 0)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.translate(exc, doing=f"listing s3://{bucket}/{prefix}") from exc

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        """Write one (small) object; the same key written twice holds the same bytes (keys are content hashes)."""
        try:
            self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.translate(exc, doing=f"writing s3://{bucket}/{key}") from exc

    def read_text(self, bucket: str, key: str) -> str:
        """A small text object's content (label files)."""
        response: Any = None
        try:
            response = self.client.get_object(bucket, key, length=MAX_LABEL_BYTES)
            data: bytes = response.read()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.translate(exc, doing=f"reading s3://{bucket}/{key}") from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        return data.decode("utf-8", errors="replace")
