"""A component's rollout status as plain data, and its camelCase form for the CRD.

Status is the rollout's only memory: a restarted operator continues from what `from_dict`
reads back, so everything the state machine needs between passes is here, and times are
written as RFC 3339 (whole seconds) like the rest of the status. `RolloutStatusSchema` is
what the CRD declares for it (`status.rollout.<component>`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from order_operator import resource_model
from order_operator.rollout import judge

Phase = Literal["Healthy", "Progressing", "Paused", "Degraded"]
HEALTHY: Phase = "Healthy"
PROGRESSING: Phase = "Progressing"
PAUSED: Phase = "Paused"
DEGRADED: Phase = "Degraded"

ROLLOUT_PROGRESSING = "RolloutProgressing"
ROLLED_BACK = "RolledBack"


def to_iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(int(at), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Analysis:
    """A judge's result and when its window ended."""

    at: float
    result: judge.Result

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": to_iso(self.at),
            "verdict": self.result.verdict,
            "measures": [measure.to_dict() for measure in self.result.measures],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Analysis:
        measures = tuple(judge.Measure.from_dict(m) for m in data.get("measures", []))
        return cls(
            at=from_iso(data["at"]),
            result=judge.Result(verdict=data["verdict"], measures=measures),
        )


@dataclass(frozen=True)
class RolloutStatus:
    phase: Phase
    stable_revision: str
    """The pod-template revision the stable Deployment runs."""
    canary_revision: str | None = None
    """The revision being rolled out; None when none is."""
    current_step: int | None = None
    """Index into the steps; None when no rollout runs."""
    target_weight: int = 0
    """Percent the current step asks for."""
    planned_share: float | None = None
    """The fraction the canary's pods (API) or consumers (processor) give."""
    observed_share: float | None = None
    """The fraction of requests or messages the canary actually got in the last window."""
    step_started_at: float | None = None
    failures: int = 0
    """Failed comparisons in this rollout (against analysis.failureLimit)."""
    last_analysis: Analysis | None = None
    abort_reason: str | None = None
    failed_revision: str | None = None
    """An aborted revision: not rolled out again until the template changes or `retry`."""
    handled_command: str | None = None
    """The id of the last command carried out, so a command is carried out once."""
    message: str = ""
    conditions: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def rolling(self) -> bool:
        return self.canary_revision is not None and self.phase in (PROGRESSING, PAUSED)

    def to_dict(self) -> dict[str, Any]:
        """The `status.rollout.<component>` object. An absent value is null: in the merge patch
        that writes status, null removes what an earlier pass wrote (a canary revision after
        its promotion), and the stored object never holds it."""
        data: dict[str, Any] = {
            "phase": self.phase,
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "currentStep": self.current_step,
            "targetWeight": self.target_weight,
            "plannedShare": self.planned_share,
            "observedShare": self.observed_share,
            "stepStartedAt": None if self.step_started_at is None else to_iso(self.step_started_at),
            "failures": self.failures,
            "lastAnalysis": None if self.last_analysis is None else self.last_analysis.to_dict(),
            "abortReason": self.abort_reason,
            "failedRevision": self.failed_revision,
            "handledCommand": self.handled_command,
            "message": self.message,
            "conditions": [dict(condition) for condition in self.conditions],
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutStatus:
        started = data.get("stepStartedAt")
        analysis = data.get("lastAnalysis")
        planned, observed = data.get("plannedShare"), data.get("observedShare")
        return cls(
            phase=data["phase"],
            stable_revision=str(data["stableRevision"]),
            canary_revision=data.get("canaryRevision"),
            current_step=data.get("currentStep"),
            target_weight=int(data.get("targetWeight", 0)),
            planned_share=None if planned is None else float(planned),
            observed_share=None if observed is None else float(observed),
            step_started_at=None if started is None else from_iso(started),
            failures=int(data.get("failures", 0)),
            last_analysis=None if analysis is None else Analysis.from_dict(analysis),
            abort_reason=data.get("abortReason"),
            failed_revision=data.get("failedRevision"),
            handled_command=data.get("handledCommand"),
            message=str(data.get("message", "")),
            conditions=tuple(dict(c) for c in data.get("conditions", [])),
        )


class MeasureSchema(resource_model.StatusModel):
    name: str
    kind: judge.Kind
    query: str
    value: float | None = None
    verdict: judge.Verdict
    detail: str


class AnalysisSchema(resource_model.StatusModel):
    at: datetime.datetime
    verdict: judge.Verdict
    measures: list[MeasureSchema] = []


class RolloutStatusSchema(resource_model.StatusModel):
    """`status.rollout.<component>` as the CRD must declare it (the apiserver prunes what it
    does not declare); `to_dict` writes nothing else."""

    phase: Phase
    stable_revision: str
    canary_revision: str | None = None
    current_step: int | None = None
    target_weight: int = 0
    planned_share: float | None = None
    observed_share: float | None = None
    step_started_at: datetime.datetime | None = None
    failures: int = 0
    last_analysis: AnalysisSchema | None = None
    abort_reason: str | None = None
    failed_revision: str | None = None
    handled_command: str | None = None
    message: str = ""
    conditions: list[resource_model.Condition] = resource_model.condition_list()
