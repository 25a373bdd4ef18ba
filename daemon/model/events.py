"""Source events: one model for everything that says "data changed" (or "time to look").

Every source (MinIO listen, webhook, S3 reconcile, folder watcher) turns what it saw into a
:class:`SourceEvent`. Its id is deterministic, so the same change seen twice (a webhook retry, a reconcile
after a notification) is the same event and the journal stores it once.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from daemon.model import ids


class Source(enum.StrEnum):
    MINIO_LISTEN = "minio_listen"
    WEBHOOK = "webhook"
    S3_RECONCILE = "s3_reconcile"
    FOLDER = "folder"
    FOLDER_RESCAN = "folder_rescan"


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    CHANGED = "changed"
    DELETED = "deleted"


class ItemKind(enum.StrEnum):
    """What a key is, by the dataset layout."""

    LABEL = "label"
    IMAGE = "image"
    OTHER = "other"


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


#: Text files a flat folder may hold beside its labels that are not labels (compared case-insensitively).
FLAT_NOT_LABELS = frozenset({"classes.txt", "readme.txt", "license.txt"})


def classify(
    relative_key: str, *, labels_dir: str = "labels", images_dir: str = "images", layout: str = "yolo"
) -> ItemKind:
    """Tell labels from images by the dataset layout.

    ``yolo``: ``labels/**.txt`` and ``images/**.{jpg,png,...}`` (the folder names as the rule sets them, at any
    depth: ``train/labels/`` too). ``flat``: images beside their labels, any ``.txt`` but the class list and
    read-me files a label. ``relative_key`` is relative to the dataset root (the S3 prefix or the folder).
    """
    parts = relative_key.split("/")
    name = parts[-1]
    if not name or name.startswith("."):
        return ItemKind.OTHER
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if layout == "flat":
        if suffix == ".txt" and name.lower() not in FLAT_NOT_LABELS:
            return ItemKind.LABEL
        return ItemKind.IMAGE if suffix in IMAGE_SUFFIXES else ItemKind.OTHER
    folders = parts[:-1]
    if labels_dir in folders and suffix == ".txt":
        return ItemKind.LABEL
    if images_dir in folders and suffix in IMAGE_SUFFIXES:
        return ItemKind.IMAGE
    return ItemKind.OTHER


#: The longest key the journal takes (S3's own limit, in UTF-8 bytes).
MAX_KEY_BYTES = 1024


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be journaled losslessly, or None.

    File names are bytes: one that is not valid UTF-8 (Latin-1 ``caf\\xe9.txt``) arrives as a string with
    surrogate escapes, which no text store (nor S3, nor a KFP parameter) can hold as it is. Such a key is
    refused, and reported by its :func:`escaped` name, instead of stopping its batch.
    """
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if "\0" in key:
        return "the name holds a NUL character"
    if len(encoded) > MAX_KEY_BYTES:
        return f"the name is longer than {MAX_KEY_BYTES} bytes"
    return None


def escaped(key: str) -> str:
    """A printable rendering of any key, for messages: undecodable bytes as ``\\xNN``."""
    try:
        raw = key.encode("utf-8", "surrogateescape")  # file names: undecodable bytes come back as \\xNN
    except UnicodeEncodeError:
        raw = key.encode("utf-8", "backslashreplace")  # other lone surrogates (from JSON) as \\udNNN
    return raw.decode("utf-8", "backslashreplace").replace("\0", "\\x00")


def version_of(*, etag: str | None, size: int | None, mtime_ns: int | None) -> str:
    """What identifies one version of an object: its etag, else its size and modification time."""
    if etag:
        return etag.strip('"')
    return f"{size}:{mtime_ns}"


def event_id(*, dataset: str, key: str, kind: ChangeKind, version: str, generation: int) -> ids.EventId:
    """The deterministic id of "``key`` of ``dataset`` reached ``version`` by ``kind``".

    Created and changed are one id for one version: whichever source sees a version first journals it.
    ``generation`` counts the key's earlier deletions, so that re-uploading the same bytes after a delete is
    a new event, while a repeated notification of either is not.
    """
    change = "deleted" if kind is ChangeKind.DELETED else "present"
    digest = hashlib.sha256(f"{dataset}\0{key}\0{change}\0{version}\0{generation}".encode()).hexdigest()
    return ids.EventId(digest[:32])


@dataclass(frozen=True, kw_only=True)
class SourceEvent:
    """One observed change of one object.

    ``version`` is the etag (S3) or ``size:mtime_ns`` (folders). Deletes often come without it (MinIO
    sends no etag for deletes): the journal then takes the version it has on record.
    """

    source: Source
    dataset: str
    key: str
    """Key relative to the dataset root, with '/' separators, URL-decoded."""
    kind: ChangeKind
    item: ItemKind
    version: str | None
    size: int | None
    time: datetime
    """When the source says the change happened (aware)."""
    class_counts: dict[str, int] | None = None
    """For label files whose contents the source read: boxes per class id."""
