"""Dataset snapshots and run keys: same data, same key.

A snapshot is the sorted manifest of every present file of a dataset with its version (etag, or
size:mtime). Its fingerprint is a hash of that manifest, independent of the order files were seen in. The
run key of a data-triggered run is the rule plus that fingerprint; of a scheduled run, the rule plus the
slot. Keys are lower-case ``[a-z0-9-]`` so that they are valid KFP run names and Kubernetes labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from daemon.model import ids

_FINGERPRINT_CHARS = 16


def fingerprint(manifest: Iterable[tuple[str, str]]) -> str | None:
    """The fingerprint of ``(key, version)`` pairs, in any order; ``None`` for an empty dataset."""
    items = sorted(manifest)
    if not items:
        return None
    digest = hashlib.sha256()
    for key, version in items:
        digest.update(key.encode())
        digest.update(b"\0")
        digest.update(version.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def data_run_key(rule: str, snapshot: str) -> ids.RunKey:
    """Run key of a run that trains ``rule`` on the snapshot with fingerprint ``snapshot``."""
    return ids.RunKey(f"{rule}-d{snapshot[:_FINGERPRINT_CHARS]}")


def schedule_run_key(rule: str, slot: datetime) -> ids.RunKey:
    """Run key of the run of ``rule`` for the schedule slot ``slot`` (one run per slot, ever)."""
    return ids.RunKey(f"{rule}-s{slot.astimezone(UTC):%Y%m%d%H%M}")


def observation_run_key(rule: str, observation_id: str) -> ids.RunKey:
    """Run key of a run answering one metric-drift observation."""
    return ids.RunKey(f"{rule}-m{observation_id[:_FINGERPRINT_CHARS]}")
