"""The triggers of a rule: new labels, a cron schedule, class-distribution drift, metric drift."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from daemon.model import crontab, durations
from daemon.model.specs import Duration, Spec, positive


class NewLabelsTrigger(Spec):
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
        positive(self.max_wait, "max_wait")
        if self.quiet_period < timedelta(0):
            raise ValueError("quiet_period must not be negative")
        if self.max_wait < self.quiet_period:
            raise ValueError(
                f"max_wait ({durations.format(self.max_wait)}) is shorter than quiet_period "
                f"({durations.format(self.quiet_period)}): the quiet period could never end a wait"
            )
        return self


class ScheduleTrigger(Spec):
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


class ClassDriftTrigger(Spec):
    """Fire when the class mix of new labels diverges from the champion's training data."""

    statistic: Literal["jensen_shannon", "psi"]
    """``jensen_shannon`` (base 2, 0..1) or ``psi`` (population stability index)."""
    threshold: float = Field(gt=0)
    """Divergence at or above which the trigger fires."""
    min_labels: int = Field(default=50, ge=1)
    """New label files needed before the histogram is trusted."""
    check_every: Duration = timedelta(hours=1)
    """How often the histogram is recomputed."""


class MetricDriftTrigger(Spec):
    """Fire when a live metric in MLflow drops below the champion's validation value."""

    metric: str = Field(min_length=1)
    """MLflow metric name logged by a monitor, e.g. ``live_map50_95``."""
    drop_from_champion: float = Field(gt=0)
    """Absolute drop from the champion's validation mAP that fires, e.g. 0.05."""
    experiment: str | None = None
    """MLflow experiment the monitor logs to; defaults to the registered model's name."""
    check_every: Duration = timedelta(minutes=15)
    """How often the metric is read."""


class TriggerSpec(Spec):
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
