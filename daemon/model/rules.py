"""The rule schema: what users write in ``rules/*.yaml``, validated once at the edge.

Pydantic models with ``extra="forbid"`` so that a typo is an error (with the closest valid name suggested
by the loader), frozen so that a loaded rule is a value. Durations are human strings (``90s``, ``10m``,
``6h``) turned into ``timedelta``; cron expressions are standard crontab (0 = Sunday).

A rule file holds one rule, several YAML documents of one rule each, or a mapping ``rules: [...]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from daemon.model import crontab, durations


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return durations.parse(value)
    raise ValueError(f"{value!r} is not a duration: write it with a unit, e.g. 90s, 10m, 6h")


#: A human duration, ``timedelta`` inside, written back the way users write it.
Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(durations.format, return_type=str)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _positive(value: timedelta, what: str) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"{what} must be longer than 0s")
    return value


RULE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<prefix>.*)$")


class DatasetSpec(_Spec):
    """Where the data lives and how it is laid out."""

    source: str
    """``s3://bucket/prefix/`` or ``file:///absolute/path``."""
    name: str | None = None
    """Name of the dataset in the journal; defaults to the rule's name. Rules sharing data share a name."""
    layout: Literal["yolo"] = "yolo"
    """``yolo``: ``images/`` and ``labels/`` folders (optionally with ``train``/``val`` below them),
    one ``.txt`` label file per image."""
    labels_dir: str = "labels"
    """Folder under the source holding label files."""
    images_dir: str = "images"
    """Folder under the source holding images."""
    classes: list[str] | None = None
    """Class names by id; needed for per-class minimums by name."""

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value.startswith("s3://"):
            match = _S3_URI.match(value)
            if match is None:
                raise ValueError(f"{value!r} is not s3://bucket/prefix/ (bucket names: 3-63 of a-z 0-9 . -)")
            if match["prefix"] and not match["prefix"].endswith("/"):
                raise ValueError(f"the prefix of {value!r} must end with '/' so it names a folder")
            return value
        if value.startswith("file://"):
            if not value.startswith("file:///"):
                raise ValueError(f"{value!r} must be an absolute file URI: file:///path/to/dataset")
            return value
        raise ValueError(f"{value!r} is neither s3://bucket/prefix/ nor file:///path")

    @property
    def scheme(self) -> Literal["s3", "file"]:
        return "s3" if self.source.startswith("s3://") else "file"


def _check_base(value: str) -> str:
    if value.startswith("models:/"):
        if "@" not in value and value.count("/") < 2:
            raise ValueError(f"{value!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
        return value
    if value.startswith("s3://") and not _S3_URI.match(value.rsplit("/", 1)[0] + "/"):
        raise ValueError(f"{value!r} is not s3://bucket/key.pt")
    if value.startswith("file://") and not value.startswith("file:///"):
        raise ValueError(f"{value!r} must be an absolute file URI: file:///path/to/weights.pt")
    if not value.endswith((".pt", ".yaml", ".yml")):
        raise ValueError(
            f"{value!r}: base must be .pt weights (s3://..., file:///... or a file in the trainer image), "
            "a .yaml model config or models:/..."
        )
    return value


class ModelSpec(_Spec):
    """The model: its MLflow registered name and what training starts from."""

    registered_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=256)
    """MLflow registered model name."""
    base: str = "yolov8n.yaml"
    """Starting point: weights in S3 (``s3://models/yolov8n.pt``) or on the dataset volume
    (``file:///data/weights/yolov8n.pt``), a model config (``yolov8n.yaml``, random init), or
    ``models:/NAME@champion`` to fine-tune the current champion. Nothing is downloaded from the internet."""
    base_if_no_champion: str | None = None
    """What the first run starts from when ``base`` is ``models:/NAME@champion`` and no champion exists yet
    (same forms as ``base``, except another ``models:/``)."""

    @field_validator("base")
    @classmethod
    def _check_base(cls, value: str) -> str:
        return _check_base(value)

    @field_validator("base_if_no_champion")
    @classmethod
    def _check_fallback(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("models:/"):
            raise ValueError("base_if_no_champion cannot itself be a registered model")
        return _check_base(value)


class NewLabelsTrigger(_Spec):
    """Fire when enough new or changed label files have arrived and the upload has settled."""

    min_new_labels: int = Field(default=1, ge=1)
    """New or changed label files needed."""
    min_new_images: int | None = Field(default=None, ge=1)
    """New or changed images needed, if set."""
    min_per_class: dict[str, int] | None = None
    """Minimum new boxes per class (by name or id), e.g. ``{cat: 20}``."""
    quiet_period: Duration = timedelta(minutes=10)
    """No new matching file for this long means the upload has settled (``0s`` fires at once)."""
    max_wait: Duration = timedelta(hours=6)
    """Fire after this long from the first pending file even if uploads keep coming."""

    @field_validator("min_per_class")
    @classmethod
    def _check_per_class(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for name, count in (value or {}).items():
            if count < 1:
                raise ValueError(f"class {name!r}: minimum must be at least 1, got {count}")
        return value

    @model_validator(mode="after")
    def _check_waits(self) -> NewLabelsTrigger:
        _positive(self.max_wait, "max_wait")
        if self.quiet_period < timedelta(0):
            raise ValueError("quiet_period must not be negative")
        if self.max_wait < self.quiet_period:
            raise ValueError(
                f"max_wait ({durations.format(self.max_wait)}) is shorter than quiet_period "
                f"({durations.format(self.quiet_period)}): the quiet period could never end a wait"
            )
        return self


class ScheduleTrigger(_Spec):
    """Fire on a cron schedule (standard crontab: 0 = Sunday)."""

    cron: str
    """Five-field crontab expression, e.g. ``0 3 * * 0`` (Sundays at 03:00) or ``@daily``."""
    timezone: str = "UTC"
    """IANA timezone the expression is read in, e.g. ``Europe/Berlin``."""
    only_if_new_data: bool = False
    """Skip the slot when no new or changed labels are pending."""
    misfire_grace: Duration = timedelta(minutes=5)
    """A slot missed (daemon down) by more than this is skipped, not run late."""

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        try:
            crontab.CronExpression.parse(value)
        except ValueError as exc:
            raise ValueError(f"bad cron expression {value!r}: {exc}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}: use an IANA name like Europe/Berlin or UTC") from exc
        return value

    @property
    def expression(self) -> crontab.CronExpression:
        return crontab.CronExpression.parse(self.cron)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class ClassDriftTrigger(_Spec):
    """Fire when the class mix of new labels diverges from the champion's training data."""

    statistic: Literal["jensen_shannon", "psi"]
    """``jensen_shannon`` (base 2, 0..1) or ``psi`` (population stability index)."""
    threshold: float = Field(gt=0)
    """Divergence at or above which the trigger fires."""
    min_labels: int = Field(default=50, ge=1)
    """New label files needed before the histogram is trusted."""
    check_every: Duration = timedelta(hours=1)
    """How often the histogram is recomputed."""


class MetricDriftTrigger(_Spec):
    """Fire when a live metric in MLflow drops below the champion's validation value."""

    metric: str = Field(min_length=1)
    """MLflow metric name logged by a monitor, e.g. ``live_map50_95``."""
    drop_from_champion: float = Field(gt=0)
    """Absolute drop from the champion's validation mAP that fires, e.g. 0.05."""
    experiment: str | None = None
    """MLflow experiment the monitor logs to; defaults to the registered model's name."""
    check_every: Duration = timedelta(minutes=15)
    """How often the metric is read."""


class TriggerSpec(_Spec):
    """One trigger: exactly one of the keys below."""

    new_labels: NewLabelsTrigger | None = None
    schedule: ScheduleTrigger | None = None
    class_drift: ClassDriftTrigger | None = None
    metric_drift: MetricDriftTrigger | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if isinstance(data, dict):
            present = [str(key) for key in data]
            if len(present) != 1:
                kinds = ", ".join(cls.model_fields)
                raise ValueError(f"a trigger has exactly one of {kinds}; got {', '.join(present) or 'none'}")
            key = present[0]
            if key in cls.model_fields and data[key] is None:
                return {key: {}}
        return data

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def spec(self) -> NewLabelsTrigger | ScheduleTrigger | ClassDriftTrigger | MetricDriftTrigger:
        value = getattr(self, self.kind)
        assert value is not None
        return value  # type: ignore[no-any-return]


#: Ultralytics training arguments a search space may tune.
TUNABLE = frozenset(
    [
        "lr0",
        "lrf",
        "momentum",
        "weight_decay",
        "warmup_epochs",
        "warmup_momentum",
        "warmup_bias_lr",
        "box",
        "cls",
        "dfl",
        "hsv_h",
        "hsv_s",
        "hsv_v",
        "degrees",
        "translate",
        "scale",
        "shear",
        "perspective",
        "flipud",
        "fliplr",
        "mosaic",
        "mixup",
        "copy_paste",
    ]
)


def _only_tunable(names: Mapping[str, object], problem: str) -> None:
    unknown = sorted(set(names) - TUNABLE)
    if unknown:
        raise ValueError(f"{problem} {', '.join(unknown)}: tunable are {', '.join(sorted(TUNABLE))}")


class SearchRange(_Spec):
    """A range to sample one hyperparameter from."""

    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        # The compact form [low, high] or [low, high, log] of the design sketch.
        if isinstance(data, list | tuple):
            if len(data) not in (2, 3):
                raise ValueError("write a range as [low, high], [low, high, log] or {low:, high:, scale:}")
            return {"low": data[0], "high": data[1], **({"scale": data[2]} if len(data) == 3 else {})}
        return data

    @model_validator(mode="after")
    def _check(self) -> SearchRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low:g}")
        return self


class TuneSpec(_Spec):
    """Hyperparameter tuning: trials fanned out across GPUs, then the best one trains in full."""

    trials: int = Field(ge=1)
    """Hyperparameter sets sampled from ``space``."""
    parallelism: int = Field(default=1, ge=1)
    """Trials running at once (one GPU each on a cluster)."""
    epochs: int = Field(default=10, ge=1)
    """Epochs per trial."""
    seed: int = 0
    """Seed of the sampler: the same rule samples the same trials."""
    space: dict[str, SearchRange] = Field(min_length=1)
    """Ranges by Ultralytics argument name, e.g. ``lr0: [1.0e-4, 1.0e-1, log]``."""

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: dict[str, SearchRange]) -> dict[str, SearchRange]:
        _only_tunable(value, "cannot tune")
        return value

    @model_validator(mode="after")
    def _check_parallelism(self) -> TuneSpec:
        if self.parallelism > self.trials:
            raise ValueError(f"parallelism ({self.parallelism}) exceeds trials ({self.trials})")
        return self


class TrainingSpec(_Spec):
    """How the model is trained."""

    epochs: int = Field(default=100, ge=1)
    imgsz: int = Field(default=640, ge=32, multiple_of=32)
    """Training image size in pixels (a multiple of 32)."""
    batch: int = Field(default=16, ge=1)
    gpus: int = Field(default=1, ge=0)
    """GPUs for the training step (0 = CPU)."""
    hyperparameters: dict[str, float] = Field(default_factory=dict)
    """Fixed Ultralytics arguments, e.g. ``{lr0: 0.01}``; tuning overrides them."""
    tune: TuneSpec | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _check_hyperparameters(cls, value: dict[str, float]) -> dict[str, float]:
        _only_tunable(value, "unknown hyperparameter")
        return value


class PromotionSpec(_Spec):
    """The gate: when a candidate replaces the champion."""

    metric: Literal["map50_95", "map50"] = "map50_95"
    """Validation metric compared on the same images."""
    min_improvement: float = Field(default=0.0, ge=0, le=1)
    """The candidate must beat the champion by strictly more than this."""
    max_class_drop: float | None = Field(default=None, gt=0, le=1)
    """Refuse when any class's AP drops by more than this (unset: no per-class check)."""
    first_model_min: float = Field(default=0.0, ge=0, le=1)
    """The very first model becomes champion only with at least this value."""


class LimitsSpec(_Spec):
    """How often a rule may launch."""

    cooldown: Duration = timedelta(hours=1)
    """Time after a launch before the next automatic launch."""
    max_concurrent_runs: int = Field(default=1, ge=1)
    max_runs_per_day: int | None = Field(default=None, ge=1)
    """Launches allowed in any 24 hours (unset: no limit)."""

    @field_validator("cooldown")
    @classmethod
    def _check_cooldown(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("cooldown must not be negative")
        return value


class Rule(_Spec):
    """One retraining rule."""

    name: str
    """Unique across all rule files: lower-case letters, digits and '-', at most 48 characters."""
    renamed_from: str | None = None
    """The rule's previous name, when it was renamed: its history (consumed data, runs, cooldown, daily
    cap, and a dataset named after it) moves to the new name once, so the rename does not relaunch."""
    enabled: bool = True
    dataset: DatasetSpec
    model: ModelSpec
    triggers: list[TriggerSpec] = Field(min_length=1)
    training: TrainingSpec = TrainingSpec()
    promotion: PromotionSpec = PromotionSpec()
    limits: LimitsSpec = LimitsSpec()

    @field_validator("name", "renamed_from")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not RULE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid rule name: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 48 characters"
            )
        return value

    @field_validator("triggers")
    @classmethod
    def _check_classes(cls, value: list[TriggerSpec], info: ValidationInfo) -> list[TriggerSpec]:
        dataset = info.data.get("dataset")
        classes = dataset.classes if isinstance(dataset, DatasetSpec) else None
        for index, trigger in enumerate(value):
            for name in (trigger.new_labels.min_per_class or {}) if trigger.new_labels else {}:
                where = f"triggers[{index}].new_labels.min_per_class"
                if name.isdigit():
                    if classes is not None and int(name) >= len(classes):
                        raise ValueError(f"{where}: class id {name} is not in dataset.classes (0-{len(classes) - 1})")
                elif classes is None:
                    raise ValueError(f"{where}: class {name!r} is a name: set dataset.classes, or use its class id")
                elif name not in classes:
                    raise ValueError(f"{where}: unknown class {name!r}; dataset.classes are {', '.join(classes)}")
        return value

    @property
    def dataset_name(self) -> str:
        return self.dataset.name or self.name

    def class_id(self, name: str) -> str:
        """The class id (as the label files write it) of a class given by id or by name."""
        classes = self.dataset.classes
        return str(classes.index(name)) if classes is not None and name in classes else name

    def triggers_of(self, kind: str) -> list[Any]:
        return [t.spec for t in self.triggers if t.kind == kind]
