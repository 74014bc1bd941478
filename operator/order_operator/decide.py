"""Decide: what a reconcile pass should change, as plain data, from the spec and what exists.

Pure: no I/O, no clock (the time comes in with the snapshot), no kopf. `act` carries the plans
out through the adapters; `pipeline_status` reports on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from order_common import schema
from order_operator import aws, builders, conditions, scaling
from order_operator.observe import (
    ENGINE_UNAVAILABLE,
    CloudSnapshot,
    DeletionSnapshot,
    Failure,
    ScalingSnapshot,
)
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
    """A queue or table exists that is not ours to change: leave it alone and say so."""

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
    tags: Mapping[str, str]


@dataclass(frozen=True)
class TagTable:
    """An existing table of ours (or adopted) that lacks some of our owner tags."""

    name: str
    arn: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class EnableTimeToLive:
    name: str
    attribute: str


TableStep = CreateTable | TagTable | EnableTimeToLive


@dataclass(frozen=True)
class TablesPlan:
    steps: tuple[TableStep, ...]
    pending: tuple[str, ...]
    """Tables not ACTIVE after this pass (created now, or still being created)."""
    conflict: Conflict | None = None
    """A table that is not ours: then no table is touched."""


@dataclass(frozen=True)
class Plan:
    """One pass's changes to the cloud and the cluster. A Failure means that part could not be
    observed (and says why); None means it was not looked at (no AWS credentials)."""

    queues: QueuesPlan | Failure
    tables: TablesPlan | Failure | None
    children: tuple[dict[str, Any], ...]
    """Applied every pass (server-side apply takes back drift and recreates deleted ones)."""


def owner_tags(owner: builders.Owner) -> dict[str, str]:
    """The tags that make a queue or table this very OrderPipeline's."""
    return {aws.OWNER_TAG: f"{owner.namespace}/{owner.name}", aws.OWNER_UID_TAG: owner.uid}


def queue_tags(queue: v1alpha1.QueueSpec, owner: builders.Owner) -> dict[str, str]:
    return {**queue.tags, **owner_tags(owner)}


Holder = Literal["this pipeline", "a predecessor", "nobody", "another pipeline"]


def holder(tags: Mapping[str, str], owner: builders.Owner) -> Holder:
    """Whose an existing queue or table is, by its owner tags. A predecessor is an earlier
    OrderPipeline of the same namespace and name (another uid) that retained it."""
    named, uid = tags.get(aws.OWNER_TAG), tags.get(aws.OWNER_UID_TAG)
    if named is None and uid is None:
        return "nobody"
    # `<namespace>.<name>` without a uid: written by operator versions before the uid tag.
    if named in (f"{owner.namespace}/{owner.name}", f"{owner.namespace}.{owner.name}"):
        return "this pipeline" if uid == owner.uid else "a predecessor"
    return "another pipeline"


def not_ours(
    kind: str, name: str, tags: Mapping[str, str], owner: builders.Owner, *, adopt: bool
) -> Conflict | None:
    """Why an existing queue or table may not be converged by this pipeline (None: it may)."""
    held_by = holder(tags, owner)
    if held_by == "this pipeline" or (adopt and held_by in ("a predecessor", "nobody")):
        return None
    if held_by == "another pipeline":
        return Conflict(f"{kind} {name} belongs to OrderPipeline {tags.get(aws.OWNER_TAG)}")
    why = "has no owner tag" if held_by == "nobody" else "was left by an earlier OrderPipeline"
    return Conflict(f"{kind} {name} exists and {why}; set spec.adopt to take it over")


def decide_queue(
    name: str,
    attributes: Mapping[str, str],
    tags: Mapping[str, str],
    observed: aws.ObservedQueue | None,
    *,
    owner: builders.Owner,
    adopt: bool,
) -> QueueStep | Conflict:
    """Create, or converge attributes and tags of a queue that is ours (or adopted)."""
    if observed is None:
        return CreateQueue(name=name, attributes=dict(attributes), tags=dict(tags))
    conflict = not_ours("queue", name, observed.tags, owner, adopt=adopt)
    if conflict is not None:
        return conflict
    return UpdateQueue(
        name=name,
        url=observed.url,
        attributes=aws.attributes_to_change(attributes, observed.attributes),
        tags={key: value for key, value in tags.items() if observed.tags.get(key) != value},
    )


def decide_main_queue(
    spec: v1alpha1.OrderPipelineSpec,
    owner: builders.Owner,
    observed: aws.ObservedQueue | None,
    dlq_arn: str,
) -> QueueStep | Conflict:
    queue = spec.queue
    return decide_queue(
        queue.name,
        aws.queue_attributes(queue, dlq_arn),
        queue_tags(queue, owner),
        observed,
        owner=owner,
        adopt=spec.adopt,
    )


def decide_queues(
    spec: v1alpha1.OrderPipelineSpec, owner: builders.Owner, observed: aws.ObservedQueues
) -> QueuesPlan:
    """Nothing is written unless both queues are absent or ours: a DLQ is never made for, or
    redriven into from, a queue that belongs to someone else."""
    queue = spec.queue
    for name, seen in ((queue.dlq_name, observed.dlq), (queue.name, observed.main)):
        conflict = not_ours("queue", name, seen.tags, owner, adopt=spec.adopt) if seen else None
        if conflict is not None:
            return QueuesPlan(steps=(), conflict=conflict)
    dlq = decide_queue(
        queue.dlq_name,
        aws.dlq_attributes(queue),
        queue_tags(queue, owner),
        observed.dlq,
        owner=owner,
        adopt=spec.adopt,
    )
    if isinstance(dlq, Conflict):
        return QueuesPlan(steps=(), conflict=dlq)
    dlq_arn = observed.dlq.attributes.get("QueueArn") if observed.dlq is not None else None
    if dlq_arn is None:
        return QueuesPlan(steps=(dlq,), main_after_dlq=MainQueueAfterDlq(observed.main))
    main = decide_main_queue(spec, owner, observed.main, dlq_arn)
    if isinstance(main, Conflict):
        return QueuesPlan(steps=(), conflict=main)
    return QueuesPlan(steps=(dlq, main))


def _ttl_enabled(observed: aws.ObservedTable, attribute: str) -> bool:
    return observed.ttl_status in ("ENABLED", "ENABLING") and observed.ttl_attribute == attribute


def decide_tables(
    observed: Sequence[aws.ObservedTable], owner: builders.Owner, *, adopt: bool
) -> TablesPlan:
    """Create missing tables (tagged); enable TTL on ACTIVE ones whose schema has a TTL
    attribute. Nothing at all while any of them is someone else's."""
    for seen in observed:
        conflict = (
            not_ours("table", seen.name, seen.tags, owner, adopt=adopt) if seen.exists else None
        )
        if conflict is not None:
            return TablesPlan(steps=(), pending=(), conflict=conflict)
    tags = owner_tags(owner)
    steps: list[TableStep] = []
    pending: list[str] = []
    for table, seen in zip(schema.TABLES, observed, strict=True):
        if not seen.exists:
            steps.append(CreateTable(name=seen.name, key=table.key, tags=tags))
            pending.append(seen.name)
            continue
        missing_tags = {key: value for key, value in tags.items() if seen.tags.get(key) != value}
        if missing_tags and seen.arn is not None:
            steps.append(TagTable(name=seen.name, arn=seen.arn, tags=missing_tags))
        if seen.status != "ACTIVE":
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
        else decide_queues(spec, owner, snapshot.queues)
    )
    tables = (
        decide_tables(snapshot.tables, owner, adopt=spec.adopt)
        if isinstance(snapshot.tables, tuple)
        else snapshot.tables
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
    """One attempt at finishing a deletion: the steps, in order, then whether it is done."""

    done: bool
    """Whether the finalizer may go (after the steps below)."""
    event: Event
    stop_intake: bool = False
    """The API's Service selects no pod and the API Deployment scales to zero."""
    stop_processor: bool = False
    """The processor Deployment scales to zero."""
    delete_queues: tuple[str, ...] = ()
    """Queue URLs, the main queue before its DLQ."""
    delete_tables: tuple[str, ...] = ()
    blocked: conditions.Condition | None = None
    """Why it is not done yet (the DeletionBlocked condition)."""


def _what(spec: v1alpha1.OrderPipelineSpec) -> str:
    queue = spec.queue
    return f"queues {queue.name}, {queue.dlq_name} and tables {', '.join(spec.tables.names)}"


def _held(
    reason: str, message: str, *, stop_processor: bool = False, warning: bool = True
) -> DeletionPlan:
    blocked = conditions.deletion_blocked(reason, message)
    return DeletionPlan(
        done=False,
        event=Event("Warning" if warning else "Normal", "DeletionBlocked", message),
        stop_intake=True,
        stop_processor=stop_processor,
        blocked=blocked,
    )


def _deletion_conflicts(
    spec: v1alpha1.OrderPipelineSpec, owner: builders.Owner, snapshot: DeletionSnapshot
) -> list[str]:
    """Why the queues and tables may not be deleted: any that exists and is not tagged as this
    very pipeline's (an adoptable one included: it was never adopted)."""
    queues = ((spec.queue.name, snapshot.queues.main), (spec.queue.dlq_name, snapshot.queues.dlq))
    existing = [("queue", name, seen.tags) for name, seen in queues if seen is not None] + [
        ("table", seen.name, seen.tags) for seen in snapshot.tables if seen.exists
    ]
    found = (not_ours(kind, name, tags, owner, adopt=False) for kind, name, tags in existing)
    return [conflict.message for conflict in found if conflict is not None]


def decide_deletion(
    spec: v1alpha1.OrderPipelineSpec,
    owner: builders.Owner,
    snapshot: DeletionSnapshot | Failure | None,
) -> DeletionPlan:
    """Retain keeps everything (`snapshot` None: nothing was read). Delete: stop the API, wait
    as `deletionWaitsFor` says while the processor drains, stop the processor, wait for the
    pods to be gone, then delete the queues and tables, reporting what they still held; but
    delete nothing that is not this very pipeline's, and never hang on what cannot be read."""
    queue = spec.queue
    if queue.deletion_policy == "Retain" or snapshot is None:
        return DeletionPlan(
            done=True,
            event=Event("Normal", "Retained", f"deletionPolicy Retain: kept {_what(spec)}"),
        )
    if isinstance(snapshot, Failure):
        if snapshot.reason == ENGINE_UNAVAILABLE:
            return _held(snapshot.reason, f"deletionPolicy Delete: {snapshot.message}")
        # Nothing can be checked (no credentials, access denied): keep everything and let go.
        return DeletionPlan(
            done=True,
            event=Event(
                "Warning",
                snapshot.reason,
                f"deletionPolicy Delete: kept {_what(spec)}, unchecked: {snapshot.message}",
            ),
        )
    conflicts = _deletion_conflicts(spec, owner, snapshot)
    if conflicts:
        return DeletionPlan(
            done=True,
            event=Event(
                "Warning",
                "NotOwned",
                f"deletionPolicy Delete: deleted nothing of {_what(spec)}: {'; '.join(conflicts)}",
            ),
        )
    queued = snapshot.depth.messages if snapshot.depth is not None else 0
    dead = snapshot.dlq_depth.messages if snapshot.dlq_depth is not None else 0
    waits_for = queue.deletion_waits_for
    if queued and waits_for != "Nothing":
        return _held(
            "QueueNotEmpty",
            f"deletionPolicy Delete: {queued} message(s) still wait in {queue.name}; the "
            f"processor drains it, deletion goes on once it is empty (deletionWaitsFor "
            f"{waits_for}; Nothing deletes them)",
        )
    if dead and waits_for == "QueueAndDlq":
        return _held(
            "DlqNotEmpty",
            f"deletionPolicy Delete: {dead} message(s) wait in {queue.dlq_name}; deletion goes "
            "on once it is drained or redriven (deletionWaitsFor QueueAndDlq)",
        )
    if snapshot.pods:
        return _held(
            "WorkloadsStopping",
            f"deletionPolicy Delete: {snapshot.pods} pod(s) of the API and the processor still "
            "run or terminate; the queues and tables go once they are gone",
            stop_processor=True,
            warning=False,
        )
    discarded = (
        f"; discarded {queued} message(s) of {queue.name} and {dead} of {queue.dlq_name}"
        if queued or dead
        else ""
    )
    return DeletionPlan(
        done=True,
        event=Event(
            "Warning" if discarded else "Normal",
            "Deleted",
            f"deletionPolicy Delete: removed {_what(spec)}{discarded}",
        ),
        stop_intake=True,
        stop_processor=True,
        delete_queues=tuple(
            seen.url for seen in (snapshot.queues.main, snapshot.queues.dlq) if seen is not None
        ),
        delete_tables=tuple(seen.name for seen in snapshot.tables if seen.exists),
    )
