"""Where each dataset lives, derived from the rules, and how a storage key maps to a dataset item.

Several rules may share a dataset (by ``dataset.name``); they must then agree on its source and layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from daemon import errors
from daemon.model import events, rules


@dataclass(frozen=True, kw_only=True)
class DatasetLocation:
    """One dataset's storage: an S3 bucket and prefix, or a folder."""

    name: str
    source: str
    bucket: str | None = None
    prefix: str = ""
    path: Path | None = None
    labels_dir: str = "labels"
    images_dir: str = "images"
    layout: str = "yolo"

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def relative(self, key: str) -> str | None:
        """The key relative to the dataset root, or None if it lies outside the prefix."""
        if not key.startswith(self.prefix):
            return None
        rel = key[len(self.prefix) :]
        return rel or None

    def classify(self, relative_key: str) -> events.ItemKind:
        return events.classify(relative_key, labels_dir=self.labels_dir, images_dir=self.images_dir, layout=self.layout)


def location_of(rule: rules.Rule) -> DatasetLocation:
    """The storage location a rule's dataset spec names."""
    spec = rule.dataset
    if spec.scheme == "s3":
        bucket, _, prefix = spec.source.removeprefix("s3://").partition("/")
        return DatasetLocation(
            name=rule.dataset_name,
            source=spec.source,
            bucket=bucket,
            prefix=prefix,
            labels_dir=spec.labels_dir,
            images_dir=spec.images_dir,
            layout=spec.layout,
        )
    return DatasetLocation(
        name=rule.dataset_name,
        source=spec.source,
        path=Path(unquote(urlparse(spec.source).path)),
        labels_dir=spec.labels_dir,
        images_dir=spec.images_dir,
        layout=spec.layout,
    )


def locations(rule_list: Iterable[rules.Rule]) -> tuple[dict[str, DatasetLocation], list[errors.ConfigError]]:
    """Dataset locations by name; rules that disagree about a shared dataset are reported."""
    found: dict[str, DatasetLocation] = {}
    problems: list[errors.ConfigError] = []
    for rule in rule_list:
        location = location_of(rule)
        known = found.get(location.name)
        if known is None:
            found[location.name] = location
        elif known != location:
            problems.append(
                errors.ConfigError(
                    f"dataset {location.name!r} is already {known.source} in another rule; "
                    f"rules sharing a dataset name must share its source and layout",
                    rule=rule.name,
                    field="dataset",
                )
            )
    return found, problems
