"""Outcomes: what the promotion gate decided for a run, as one typed value shared by the pipeline (which
writes it) and the daemon (which reads it from the run's output or from the registered model version).

The pipeline's promote step returns :meth:`GateOutcome.to_json`; the daemon parses it with
:meth:`GateOutcome.from_json`. Nothing between them is an untyped dict.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class GateDecision(enum.StrEnum):
    """What the gate did with a candidate."""

    PROMOTED = "promoted"
    """The candidate became champion."""
    REJECTED = "rejected"
    """Registered, not promoted: not better by enough, or a class dropped too much."""
    REFUSED = "refused"
    """Better, but the champion moved while it was evaluated (the compare-and-set lost)."""


class PromotionKind(enum.StrEnum):
    """A record of the journal's promotion history."""

    PROMOTED = "promoted"
    REJECTED = "rejected"
    REFUSED = "refused"
    ROLLBACK = "rollback"

    @property
    def moves_champion(self) -> bool:
        return self in (PromotionKind.PROMOTED, PromotionKind.ROLLBACK)


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One model's results on one split of the dataset."""

    map50_95: float
    map50: float
    per_class: Mapping[str, float] = field(default_factory=dict)
    """AP50-95 by class name."""
    split: str = "val"
    """The split scored: ``val``, or ``test`` when the dataset has one (the gate decides on it)."""
    images: int | None = None
    """How many images the split held (None: not recorded)."""

    def metric(self, name: str) -> float:
        return self.map50_95 if name == "map50_95" else self.map50

    def to_json(self) -> dict[str, Any]:
        return {
            "map50_95": self.map50_95,
            "map50": self.map50,
            "per_class": {k: (None if math.isnan(v) else v) for k, v in self.per_class.items()},
            "split": self.split,
            "images": self.images,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        per_class = {str(k): (math.nan if v is None else float(v)) for k, v in (data.get("per_class") or {}).items()}
        images = data.get("images")
        return cls(
            map50_95=float(data["map50_95"]),
            map50=float(data.get("map50", 0.0)),
            per_class=per_class,
            split=str(data.get("split") or "val"),
            images=None if images is None else int(images),
        )


@dataclass(frozen=True, kw_only=True)
class GateOutcome:
    """The gate's outcome for one run: the version it registered and what happened to it."""

    model: str
    version: str
    decision: GateDecision
    reason: str
    previous_champion: str | None = None
    """The champion when the candidate was evaluated (None: it was the first model)."""
    candidate: Evaluation | None = None
    champion: Evaluation | None = None
    recovered: bool = False
    """Read back from the registry after the run ended without reporting (not from the run's output)."""
    run_id: str | None = None
    """The MLflow run the candidate was trained in (None: not reported)."""

    @property
    def promoted(self) -> bool:
        return self.decision is GateDecision.PROMOTED

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "decision": self.decision.value,
            "reason": self.reason,
            "previous_champion": self.previous_champion,
            "candidate": self.candidate.to_json() if self.candidate else None,
            "champion": self.champion.to_json() if self.champion else None,
            "recovered": self.recovered,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateOutcome:
        """Parse a run's output. Raises ``ValueError`` (or ``KeyError``) for anything else."""
        candidate, champion = data.get("candidate"), data.get("champion")
        return cls(
            model=str(data["model"]),
            version=str(data["version"]),
            decision=GateDecision(data["decision"]),
            reason=str(data.get("reason", "")),
            previous_champion=None if data.get("previous_champion") is None else str(data["previous_champion"]),
            candidate=Evaluation.from_json(candidate) if candidate else None,
            champion=Evaluation.from_json(champion) if champion else None,
            recovered=bool(data.get("recovered", False)),
            run_id=None if data.get("run_id") is None else str(data["run_id"]),
        )
