"""Status conditions, pure: computed from what reconcile observed, merged with the old ones.

Each condition carries `observedGeneration`; `lastTransitionTime` moves only when the status
flips (True/False/Unknown), never when only the reason or message changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

QUEUES_READY = "QueuesReady"
TABLES_READY = "TablesReady"
WORKLOADS_AVAILABLE = "WorkloadsAvailable"
SCALING_READY = "ScalingReady"
READY = "Ready"
DELETION_BLOCKED = "DeletionBlocked"

# The summary `Ready` is True only when all of these are.
COMPONENT_TYPES = (QUEUES_READY, TABLES_READY, WORKLOADS_AVAILABLE, SCALING_READY)


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""


def merge(
    old: Sequence[Mapping[str, Any]],
    new: Iterable[Condition],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Old conditions updated by the new ones; types not mentioned in `new` are kept as they are."""
    merged: dict[str, dict[str, Any]] = {str(entry["type"]): dict(entry) for entry in old}
    for condition in new:
        previous = merged.get(condition.type)
        flipped = previous is None or previous.get("status") != condition.status
        transition = now if flipped or previous is None else previous.get("lastTransitionTime", now)
        merged[condition.type] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }
    return list(merged.values())


def without(conditions: Sequence[Mapping[str, Any]], condition_type: str) -> list[dict[str, Any]]:
    return [dict(entry) for entry in conditions if entry.get("type") != condition_type]


def summary(components: Sequence[Condition]) -> Condition:
    """`Ready` from the component conditions: the first one that is not True says why."""
    by_type = {condition.type: condition for condition in components}
    for condition_type in COMPONENT_TYPES:
        condition = by_type.get(condition_type)
        if condition is None:
            return Condition(READY, "Unknown", "Reconciling", f"{condition_type} not observed yet")
        if condition.status != "True":
            return Condition(
                READY, "False", condition.reason, f"{condition_type}: {condition.message}"
            )
    return Condition(READY, "True", "AllComponentsReady", "queues, tables and workloads are ready")


def is_true(conditions: Sequence[Mapping[str, Any]], condition_type: str) -> bool:
    return any(
        entry.get("type") == condition_type and entry.get("status") == "True"
        for entry in conditions
    )


def workloads_condition(
    *, api_ready: int, api_wanted: int, processor_ready: int, processor_wanted: int
) -> Condition:
    if api_ready >= api_wanted and processor_ready >= processor_wanted:
        return Condition(
            WORKLOADS_AVAILABLE,
            "True",
            "Available",
            f"api {api_ready}/{api_wanted} ready, processor {processor_ready}/{processor_wanted}",
        )
    return Condition(
        WORKLOADS_AVAILABLE,
        "False",
        "Progressing",
        f"api {api_ready}/{api_wanted} ready, processor {processor_ready}/{processor_wanted}",
    )


def deletion_blocked(reason: str, message: str) -> Condition:
    return Condition(DELETION_BLOCKED, "True", reason, message)
