"""Status: what one pass reports, computed from what it observed, decided and did. Pure.

The result is the OrderPipeline's `status` (the fields of `v1alpha1.status`), with the
component conditions merged into the old ones (see `conditions`), whether the pipeline is
Ready, and how soon to look again while something is still progressing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_operator import aws, conditions
from order_operator.act import CloudResult
from order_operator.decide import ScalePlan
from order_operator.observe import (
    CREDENTIALS_SECRET_MISSING,
    ENGINE_UNAVAILABLE,
    Failure,
    ScalingSnapshot,
    WorkloadsSnapshot,
)
from order_operator.v1alpha1 import spec as v1alpha1

# How soon to look again while something is still being created or rolled out.
PROGRESS_RETRY_SECONDS = 2.0
# An unreachable engine or a missing Secret is not fixed by looking again right away.
UNAVAILABLE_RETRY_SECONDS = PROGRESS_RETRY_SECONDS * 5


@dataclass(frozen=True)
class Scaled:
    """A scaling step that ran: what it read and what it decided."""

    snapshot: ScalingSnapshot
    plan: ScalePlan


@dataclass(frozen=True)
class Report:
    status: dict[str, Any]
    ready: bool
    retry_after: float | None


def _failed(condition_type: str, failure: Failure) -> conditions.Condition:
    return conditions.Condition(condition_type, "False", failure.reason, failure.message)


def _queues_condition(
    queue: v1alpha1.QueueSpec, result: aws.QueueInfo | Failure
) -> conditions.Condition:
    if isinstance(result, Failure):
        return _failed(conditions.QUEUES_READY, result)
    return conditions.Condition(
        conditions.QUEUES_READY,
        "True",
        "Converged",
        f"{queue.name} redrives to {queue.dlq_name} after {queue.max_receive_count} receives",
    )


def _tables_condition(
    tables: v1alpha1.TablesSpec, result: tuple[str, ...] | Failure | None
) -> conditions.Condition:
    if result is None:
        return conditions.Condition(
            conditions.TABLES_READY, "Unknown", "NoCredentials", "see queues"
        )
    if isinstance(result, Failure):
        return _failed(conditions.TABLES_READY, result)
    if result:
        return conditions.Condition(
            conditions.TABLES_READY, "False", "Creating", f"waiting for {list(result)}"
        )
    return conditions.Condition(
        conditions.TABLES_READY, "True", "Active", f"{len(tables.names)} tables"
    )


def _scaling_condition(scaled: Scaled | Failure | None) -> conditions.Condition:
    if scaled is None:
        return conditions.Condition(
            conditions.SCALING_READY, "False", "NoQueue", "queues not ready"
        )
    if isinstance(scaled, Failure):
        return _failed(conditions.SCALING_READY, scaled)
    decision = scaled.plan.decision
    return conditions.Condition(
        conditions.SCALING_READY,
        "True",
        decision.reason,
        f"backlog {scaled.plan.backlog}: desired {decision.desired}, running "
        f"{decision.replicas} ({decision.reason})",
    )


def _queue_status(
    result: aws.QueueInfo | Failure, scaled: Scaled | Failure | None
) -> dict[str, Any]:
    if isinstance(result, Failure):
        return {}
    status: dict[str, Any] = {
        "url": result.url,
        "arn": result.arn,
        "dlqUrl": result.dlq_url,
        "dlqArn": result.dlq_arn,
    }
    if isinstance(scaled, Scaled):
        depth, dlq_depth = scaled.snapshot.depth, scaled.snapshot.dlq_depth
        status.update(
            {
                "backlog": depth.visible + depth.in_flight,
                "visible": depth.visible,
                "inFlight": depth.in_flight,
                "dlqDepth": dlq_depth.visible + dlq_depth.in_flight,
            }
        )
    return status


def _processor_status(
    old: Mapping[str, Any], scaled: Scaled | Failure | None, now: str
) -> dict[str, Any]:
    """Without a scaling step the last reported counts stand."""
    if not isinstance(scaled, Scaled):
        return dict(old)
    decision = scaled.plan.decision
    status: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "currentReplicas": decision.replicas,
        "readyReplicas": scaled.snapshot.processor.ready_replicas,
    }
    if scaled.plan.scale_to is not None:
        status["lastScaleTime"] = now
    elif "lastScaleTime" in old:
        status["lastScaleTime"] = old["lastScaleTime"]
    return status


# Reasons that mean "look again soon", and how soon.
_RETRY_SECONDS_BY_REASON = {
    ENGINE_UNAVAILABLE: UNAVAILABLE_RETRY_SECONDS,
    CREDENTIALS_SECRET_MISSING: UNAVAILABLE_RETRY_SECONDS,
    "Creating": PROGRESS_RETRY_SECONDS,  # tables
    "Progressing": PROGRESS_RETRY_SECONDS,  # workloads rolling out
}


def _retry_after(found: list[conditions.Condition]) -> float | None:
    """The soonest retry any component asks for; None leaves it to the polling interval."""
    delays = [
        _RETRY_SECONDS_BY_REASON[condition.reason]
        for condition in found
        if condition.reason in _RETRY_SECONDS_BY_REASON
    ]
    return min(delays, default=None)


def pipeline_status(
    *,
    spec: v1alpha1.OrderPipelineSpec,
    generation: int,
    old_status: Mapping[str, Any],
    cloud: CloudResult,
    scaled: Scaled | Failure | None,
    workloads: WorkloadsSnapshot,
    now: str,
) -> Report:
    """`scaled` is None when there was no queue to scale on; `now` is the ISO time of the pass."""
    processor = _processor_status(old_status.get("processor") or {}, scaled, now)
    status: dict[str, Any] = {"queue": _queue_status(cloud.queues, scaled), "processor": processor}
    if cloud.tables is not None and not isinstance(cloud.tables, Failure):
        status["tables"] = spec.tables.names
    status["api"] = {"readyReplicas": workloads.api.ready_replicas}
    processor["readyReplicas"] = workloads.processor.ready_replicas
    processor_wanted = (
        scaled.plan.decision.replicas
        if isinstance(scaled, Scaled)
        else int(processor.get("currentReplicas", 0))
    )
    api, deployed = workloads.api, workloads.processor
    found = [
        _queues_condition(spec.queue, cloud.queues),
        _tables_condition(spec.tables, cloud.tables),
        _scaling_condition(scaled),
        conditions.workloads_condition(
            api_ready=api.ready_replicas if api.observed_current else 0,
            api_wanted=spec.api.autoscaling.min_replicas,
            processor_ready=min(deployed.ready_replicas, deployed.updated_replicas)
            if deployed.observed_current
            else 0,
            processor_wanted=processor_wanted,
        ),
    ]
    summary = conditions.summary(found)
    status["conditions"] = conditions.merge(
        conditions.without(old_status.get("conditions") or [], conditions.DELETION_BLOCKED),
        [*found, summary],
        generation=generation,
        now=now,
    )
    status["observedGeneration"] = generation
    return Report(status=status, ready=summary.status == "True", retry_after=_retry_after(found))
