"""The rule schema: what users write in ``rules/*.yaml``, validated once at the edge.

Pydantic models with ``extra="forbid"`` so that a typo is an error (with the closest valid name suggested
by the loader), frozen so that a loaded rule is a value. Durations are human strings (``90s``, ``10m``,
``6h``) turned into ``timedelta``; cron expressions are standard crontab (0 = Sunday).

A rule file holds one rule, several YAML documents of one rule each, or a mapping ``rules: [...]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from daemon.model.specs import Duration
from daemon.model.specs import Spec as _Spec
from daemon.model.triggers import TriggerSpec

RULE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$")
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<prefix>.*)$")


class DatasetSpec(_Spec):
    """Where the data lives and how it is laid out."""

    source: str
    """``s3://bucket/prefix/`` or ``file:///absolute/path``."""
    name: str | None = None
    """Name of the dataset in the journal; defaults to the rule's name. Rules sharing data share a name."""
    layout: Literal["yolo", "flat"] = "yolo"
    """``yolo``: ``images/`` and ``labels/`` folders, one ``.txt`` label file per image, optionally with split
    folders below them (``images/train``) or above them (Roboflow's ``train/images``); ``train``, ``val``
    (``valid``, ``validation``) and ``test`` are split names. ``flat``: each image beside its label file, in
    the root or in split folders (``train/a.jpg`` + ``train/a.txt``)."""
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


#: Ultralytics' optimizers. ``auto`` lets Ultralytics choose, and then it ignores ``lr0`` and ``momentum``
#: (it picks AdamW or SGD with a learning rate of its own), so the pipeline names one whenever they are set.
OPTIMIZERS = ("auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp")
#: Arguments a search space may draw from a list of choices (beside ranges of the numeric ones).
CATEGORICAL = frozenset(["optimizer", "imgsz", "batch"])


def _only_tunable(names: Mapping[str, object], problem: str, *, categorical: bool = False) -> None:
    allowed = TUNABLE | CATEGORICAL if categorical else TUNABLE
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise ValueError(f"{problem} {', '.join(unknown)}: tunable are {', '.join(sorted(allowed))}")


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


class SearchChoice(_Spec):
    """A list of values to choose one hyperparameter from (``optimizer``, ``imgsz``, ``batch``, or a numeric
    argument tried at a few exact values)."""

    choices: list[str | int | float] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> SearchChoice:
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"choices repeat a value: {self.choices}")
        return self


def _check_choice(name: str, choice: SearchChoice) -> None:
    for value in choice.choices:
        if name == "optimizer" and value not in OPTIMIZERS:
            raise ValueError(f"optimizer: {value!r} is not one of {', '.join(OPTIMIZERS)}")
        if name == "imgsz" and not (isinstance(value, int) and value >= 32 and value % 32 == 0):
            raise ValueError(f"imgsz: {value!r} is not a multiple of 32 of at least 32")
        if name == "batch" and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"batch: {value!r} is not a positive whole number")
        if name in TUNABLE and not isinstance(value, int | float):
            raise ValueError(f"{name}: {value!r} is not a number")


def _search_kind(value: Any) -> str:
    return "search-choice" if isinstance(value, dict | SearchChoice) and "choices" in _keys(value) else "search-range"


def _keys(value: Any) -> set[str]:
    return set(value) if isinstance(value, dict) else set(type(value).model_fields)


#: A search space entry: a range, or a list of choices (``{choices: [...]}``). The tags are what pydantic puts
#: into an error's location; the rule loader leaves them out of the field path it reports.
SearchSpec = Annotated[
    Annotated[SearchRange, Tag("search-range")] | Annotated[SearchChoice, Tag("search-choice")],
    Discriminator(_search_kind),
]
UNION_TAGS = frozenset({"search-range", "search-choice"})


class TuneSpec(_Spec):
    """Hyperparameter tuning: trials fanned out across GPUs, then the best one trains in full."""

    trials: int = Field(ge=1)
    """Hyperparameter sets asked per run from Optuna's TPE, which has seen the rule's earlier trials."""
    parallelism: int = Field(default=1, ge=1)
    """Trials running at once (one GPU each on a cluster)."""
    epochs: int = Field(default=10, ge=1)
    """Epochs per trial."""
    seed: int = 0
    """Seed of the sampler, with the run key: a retried task asks the same trials, each run new ones."""
    space: dict[str, SearchSpec] = Field(min_length=1)
    """Ranges by Ultralytics argument name, e.g. ``lr0: [1.0e-4, 1.0e-1, log]``, or choices, e.g.
    ``optimizer: {choices: [SGD, AdamW]}``."""

    @field_validator("space")
    @classmethod
    def _check_space(cls, value: dict[str, SearchRange | SearchChoice]) -> dict[str, SearchRange | SearchChoice]:
        _only_tunable(value, "cannot tune", categorical=True)
        for name, spec in value.items():
            if isinstance(spec, SearchChoice):
                _check_choice(name, spec)
            elif name in CATEGORICAL:
                raise ValueError(f"{name} is tuned from a list: write {name}: {{choices: [...]}}")
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
    optimizer: Literal["auto", "SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp"] = "auto"
    """Ultralytics' optimizer. With ``auto`` Ultralytics ignores ``lr0`` and ``momentum``: whenever either is
    set or tuned, the pipeline trains with ``SGD`` (Ultralytics' own non-automatic default) instead."""
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
    class_change: Literal["refuse", "shared"] = "refuse"
    """When champion and candidate know different class names (a class was added, removed or renamed):
    ``refuse`` rejects the candidate, naming the classes that changed (promote it by hand, or set ``shared``);
    ``shared`` scores both on the classes they share, matched by name. Classes are always matched by name:
    the same names under other ids are compared as they are, with nothing refused."""


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
    notify: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    """Names of environment variables holding Apprise URLs told of this rule's runs (besides
    ``notify.targets`` of the settings)."""

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
