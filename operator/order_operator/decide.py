"""Decide: what a reconcile pass should change, as plain data, from the spec and what exists.

Pure: no I/O, no clock (the time comes in with the snapshot), no kopf. `act` carries the plans
out through the adapters; `pipeline_status` reports on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from order_common import schema
from order_operator import aws, builders, conditions, scaling
from order_operator.observe import CloudSnapshot, Failure, ScalingSnapshot
from order_operator.v1alpha1 import spec as v1alpha1


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class CreateQueue:
    name: str
    attributes: Mapping[str, str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class UpdateQueue:
    """An existing queue of ours: write only what differs (both may be empty)."""

    name: str
    url: str
    attributes: Mapping[str, str]
    tags: Mapping[str, str]


QueueStep = CreateQueue | UpdateQueue


@dataclass(frozen=True)
class Conflict:
    """The queue exists and belongs to another OrderPipeline: leave it alone and say so."""

    message: str


@dataclass(frozen=True)
class MainQueueAfterDlq:
    """The DLQ's ARN is not known yet (it is created in this pass): the main queue's redrive
    policy names it, so its step is decided (`decide_main_queue`) once `act` has it."""

    observed: aws.ObservedQueue | None


@dataclass(frozen=True)
class QueuesPlan:
    steps: tuple[QueueStep, ...]
    """The DLQ first, then the main queue (which redrives to it)."""
    main_after_dlq: MainQueueAfterDlq | None = None
    conflict: Conflict | None = None
    """Found at the queue after the last step; nothing past it is touched."""


@dataclass(frozen=True)
class CreateTable:
    name: str
    key: str


@dataclass(frozen=True)
class EnableTimeToLive:
    name: str
    attribute: str


TableStep = CreateTable | EnableTimeToLive


@dataclass(frozen=True)
class TablesPlan:
    steps: tuple[TableStep, ...]
    pending: tuple[str, ...]
    """Tables not ACTIVE after this pass (created now, or still being created)."""


@dataclass(frozen=True)
class Plan:
    """One pass's changes to the cloud and the cluster. A Failure means that part could not be
    observed (and says why); None means it was not looked at (no AWS credentials)."""

    queues: QueuesPlan | Failure
    tables: TablesPlan | Failure | None
    children: tuple[dict[str, Any], ...]
    """Applied every pass (server-side apply takes back drift and recreates deleted ones)."""


def owner_tag(owner: builders.Owner) -> str:
    return f"{owner.namespace}.{owner.name}"


def queue_tags(queue: v1alpha1.QueueSpec, owner: builders.Owner) -> dict[str, str]:
    return {**queue.tags, aws.OWNER_TAG: owner_tag(owner)}


def decide_queue(
    name: str,
    attributes: Mapping[str, str],
    tags: Mapping[str, str],
    observed: aws.ObservedQueue | None,
) -> QueueStep | Conflict:
    """Create, or converge attributes and tags; never touch another OrderPipeline's queue."""
    if observed is None:
        return CreateQueue(name=name, attributes=dict(attributes), tags=dict(tags))
    existing_owner = observed.tags.get(aws.OWNER_TAG)
    if existing_owner is not None and existing_owner != tags[aws.OWNER_TAG]:
        return Conflict(f"queue {name} belongs to OrderPipeline {existing_owner}")
    return UpdateQueue(
        name=name,
        url=observed.url,
        attributes=aws.attributes_to_change(attributes, observed.attributes),
        tags={key: value for key, value in tags.items() if observed.tags.get(key) != value},
    )


def decide_main_queue(
    queue: v1alpha1.QueueSpec,
    owner: builders.Owner,
    observed: aws.ObservedQueue | None,
    dlq_arn: str,
) -> QueueStep | Conflict:
    return decide_queue(
        queue.name, aws.queue_attributes(queue, dlq_arn), queue_tags(queue, owner), observed
    )


def decide_queues(
    queue: v1alpha1.QueueSpec, owner: builders.Owner, observed: aws.ObservedQueues
) -> QueuesPlan:
    dlq = decide_queue(
        queue.dlq_name, aws.dlq_attributes(queue), queue_tags(queue, owner), observed.dlq
    )
    if isinstance(dlq, Conflict):
        return QueuesPlan(steps=(), conflict=dlq)
    dlq_arn = observed.dlq.attributes.get("QueueArn") if observed.dlq is not None else None
    if dlq_arn is None:
        return QueuesPlan(steps=(dlq,), main_after_dlq=MainQueueAfterDlq(observed.main))
    main = decide_main_queue(queue, owner, observed.main, dlq_arn)
    if isinstance(main, Conflict):
        return QueuesPlan(steps=(dlq,), conflict=main)
    return QueuesPlan(steps=(dlq, main))


def _ttl_enabled(observed: aws.ObservedTable, attribute: str) -> bool:
    return observed.ttl_status in ("ENABLED", "ENABLING") and observed.ttl_attribute == attribute


def decide_tables(observed: Sequence[aws.ObservedTable]) -> TablesPlan:
    """Create missing tables; enable TTL on ACTIVE ones whose schema has a TTL attribute."""
    steps: list[TableStep] = []
    pending: list[str] = []
    for table, seen in zip(schema.TABLES, observed, strict=True):
        if not seen.exists:
            steps.append(CreateTable(name=seen.name, key=table.key))
            pending.append(seen.name)
        elif seen.status != "ACTIVE":
            pending.append(seen.name)
        elif table.ttl_attribute is not None and not _ttl_enabled(seen, table.ttl_attribute):
            steps.append(EnableTimeToLive(name=seen.name, attribute=table.ttl_attribute))
    return TablesPlan(steps=tuple(steps), pending=tuple(pending))


def decide(
    spec: v1alpha1.OrderPipelineSpec, owner: builders.Owner, snapshot: CloudSnapshot
) -> Plan:
    queues = (
        snapshot.queues
        if isinstance(snapshot.queues, Failure)
        else decide_queues(spec.queue, owner, snapshot.queues)
    )
    tables = (
        decide_tables(snapshot.tables) if isinstance(snapshot.tables, tuple) else snapshot.tables
    )
    return Plan(queues=queues, tables=tables, children=tuple(builders.build_children(owner, spec)))


@dataclass(frozen=True)
class ScalePlan:
    backlog: int
    decision: scaling.Decision
    history: tuple[scaling.Recommendation, ...]
    """The recommendations to remember for the next pass (this one included)."""
    scale_to: int | None
    """The processor's new replica count; None leaves it as it is."""
    event: Event | None


def decide_scaling(
    policy: v1alpha1.ProcessorScaling,
    snapshot: ScalingSnapshot,
    history: Sequence[scaling.Recommendation],
) -> ScalePlan:
    now = snapshot.now
    state = snapshot.processor
    backlog = snapshot.depth.backlog(count_in_flight=policy.count_in_flight)
    remembered = scaling.prune_history(history, now=now, cooldown_seconds=policy.cooldown_seconds)
    if not remembered and state.exists:
        # After a restart nothing is remembered: treat the current count as just recommended,
        # so a restart never shortens a cooldown.
        remembered.append(scaling.Recommendation(now, state.spec_replicas))
    decision = scaling.decide(
        current=state.spec_replicas,
        backlog=backlog,
        scaling=policy,
        history=remembered,
        now=now,
    )
    remembered.append(scaling.Recommendation(now, decision.desired))
    scale_to: int | None = None
    event: Event | None = None
    if state.exists and decision.replicas != state.spec_replicas:
        scale_to = decision.replicas
        direction = "ScaledUp" if decision.replicas > state.spec_replicas else "ScaledDown"
        event = Event(
            "Normal",
            direction,
            f"processor {state.spec_replicas} -> {decision.replicas} replicas "
            f"(backlog {backlog}, {policy.target_messages_per_replica} per replica)",
        )
    return ScalePlan(
        backlog=backlog,
        decision=decision,
        history=tuple(remembered),
        scale_to=scale_to,
        event=event,
    )


@dataclass(frozen=True)
class DeletionPlan:
    done: bool
    """Whether the finalizer may go (after the deletions below, if any)."""
    delete_resources: bool
    waiting: int
    event: Event


def decide_deletion(spec: v1alpha1.OrderPipelineSpec, waiting: int) -> DeletionPlan:
    """Retain keeps everything; Delete removes queues and tables once nothing waits in them.
    `waiting` is only observed under Delete (0 otherwise)."""
    tables = ", ".join(spec.tables.names)
    queue = spec.queue
    if queue.deletion_policy == "Retain":
        return DeletionPlan(
            done=True,
            delete_resources=False,
            waiting=0,
            event=Event(
                "Normal",
                "Retained",
                f"deletionPolicy Retain: kept queues {queue.name}, {queue.dlq_name} "
                f"and tables {tables}",
            ),
        )
    if waiting:
        return DeletionPlan(
            done=False,
            delete_resources=False,
            waiting=waiting,
            event=Event(
                "Warning",
                "DeletionBlocked",
                conditions.deletion_blocked(waiting, queue.name).message,
            ),
        )
    return DeletionPlan(
        done=True,
        delete_resources=True,
        waiting=0,
        event=Event(
            "Normal",
            "Deleted",
            f"deletionPolicy Delete: removed empty queues {queue.name}, "
            f"{queue.dlq_name} and tables {tables}",
        ),
    )
