"""One reconcile pass of an OrderPipeline, without kopf: level-based and idempotent.

A pass observes the queues and tables, decides what to change, acts (DLQ first, then the
queue, the tables, the Kubernetes children by server-side apply), then takes one scaling step
for the processor the same way (observed after the children are applied, so a new Deployment
is already there) and computes the status from all of it. The kopf handlers call this on
create/update/resume and on every polling interval; whatever a pass could not finish is
reported in a condition and picked up by the next pass.

    observe.py  what exists, as snapshots        (I/O)
    decide.py   what to change, as plans         (pure)
    act.py      carrying the plans out           (I/O)
    pipeline_status.py  the status and conditions (pure)
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from order_operator import (
    act,
    aws,
    builders,
    decide,
    observe,
    pipeline_status,
    rollouts,
    scaling,
)
from order_operator.kube import Kube
from order_operator.observe import ClientCache, Failure
from order_operator.v1alpha1 import spec as v1alpha1


@dataclass
class PipelineMemory:
    """What the operator remembers about one OrderPipeline between passes (kopf memo)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    recommendations: list[scaling.Recommendation] = field(default_factory=list)
    rollout_memory: rollouts.Memory = field(default_factory=rollouts.Memory)


@dataclass
class Outcome:
    status: dict[str, Any]
    ready: bool
    retry_after: float | None = None
    events: list[decide.Event] = field(default_factory=list)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(body: Mapping[str, Any]) -> builders.Owner:
    metadata = body["metadata"]
    return builders.Owner(
        name=metadata["name"], namespace=metadata["namespace"], uid=metadata["uid"]
    )


def _scaling_step(
    kube: Kube,
    clients: aws.Clients | None,
    owner: builders.Owner,
    spec: v1alpha1.OrderPipelineSpec,
    queue: aws.QueueInfo | Failure,
    memory: PipelineMemory,
) -> pipeline_status.Scaled | Failure | None:
    """Observe the depth, decide, scale; None when there is no queue to scale on. With
    rollouts the processor's count is the scaler's decision, split by the rollout step
    between the stable and the canary pods, which then sets it."""
    if clients is None or isinstance(queue, Failure):
        return None
    snapshot = observe.observe_scaling(kube, clients, owner, queue)
    if isinstance(snapshot, Failure):
        return snapshot
    if spec.rollout is not None:
        snapshot = observe.with_canary_pods(kube, owner, snapshot)
    plan = decide.decide_scaling(spec.processor.scaling, snapshot, memory.recommendations)
    act.act_scaling(kube, owner, plan, memory.recommendations, scale=spec.rollout is None)
    return pipeline_status.Scaled(snapshot=snapshot, plan=plan)


def reconcile(
    body: Mapping[str, Any],
    *,
    kube: Kube,
    cache: ClientCache,
    memory: PipelineMemory,
) -> Outcome:
    """One full pass. Raises only for errors worth kopf's retry with backoff (API down)."""
    owner = owner_of(body)
    generation = int(body["metadata"].get("generation", 0))
    spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])

    clients, snapshot = observe.observe_cloud(kube, cache, owner, spec)
    plan = decide.decide(spec, owner, snapshot)
    children = rollouts.hold_stable_templates(
        plan.children, kube=kube, owner=owner, spec=spec, body=body
    )
    cloud = act.act(
        dataclasses.replace(plan, children=tuple(children)),
        clients=clients,
        kube=kube,
        spec=spec,
        owner=owner,
    )
    scaled = _scaling_step(kube, clients, owner, spec, cloud.queues, memory)
    rolled = rollouts.step(
        kube=kube,
        owner=owner,
        spec=spec,
        body=body,
        processor_desired=(
            scaled.plan.decision.replicas if isinstance(scaled, pipeline_status.Scaled) else None
        ),
        generation=generation,
        memory=memory.rollout_memory,
    )

    report = pipeline_status.pipeline_status(
        spec=spec,
        generation=generation,
        old_status=body.get("status") or {},
        cloud=cloud,
        scaled=scaled,
        workloads=observe.observe_workloads(kube, owner, with_canaries=spec.rollout is not None),
        now=now_iso(),
    )
    events = [scaled.plan.event] if isinstance(scaled, pipeline_status.Scaled) else []
    status, retry_after = report.status, report.retry_after
    if rolled is not None:
        events.extend(rolled.events)
        status = {**status, "rollout": rolled.status}
        if rolled.retry_after is not None:
            retry_after = min(retry_after or rolled.retry_after, rolled.retry_after)
    return Outcome(
        status=status,
        ready=report.ready,
        retry_after=retry_after,
        events=[event for event in events if event is not None],
    )


def finalize(body: Mapping[str, Any], *, kube: Kube, cache: ClientCache) -> decide.DeletionPlan:
    """One attempt at a deletion (see `decide.decide_deletion`); kopf calls it again until the
    plan says done. Retain needs nothing from AWS: no clients, no reads."""
    owner = owner_of(body)
    spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])
    clients: aws.Clients | None = None
    snapshot: observe.DeletionSnapshot | Failure | None = None
    if spec.queue.deletion_policy == "Delete":
        clients, snapshot = observe.observe_deletion(kube, cache, owner, spec)
    plan = decide.decide_deletion(spec, owner, snapshot)
    try:
        act.act_deletion(kube, clients, owner, plan)
    except aws.AwsRejected as error:
        # Refused for good (access denied): retrying would hold the object forever.
        return decide.DeletionPlan(
            done=True,
            event=decide.Event("Warning", "AwsRejected", f"deletionPolicy Delete: {error}"),
        )
    return plan
