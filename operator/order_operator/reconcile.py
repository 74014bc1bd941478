"""One reconcile pass of an OrderPipeline, without kopf: level-based and idempotent.

Converge the queues (DLQ first), the tables, the Kubernetes children (server-side apply), take
one scaling step for the processor, and compute the status. The kopf handlers call this on
create/update/resume and on every polling interval; whatever a pass could not finish is
reported in a condition and picked up by the next pass.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from order_operator import aws, builders, conditions, metrics, scaling
from order_operator.kube import Kube
from order_operator.v1alpha1 import spec as v1alpha1

logger = logging.getLogger(__name__)

# How soon to look again while something is still being created or rolled out.
PROGRESS_RETRY_SECONDS = 2.0


@dataclass
class PipelineMemory:
    """What the operator remembers about one OrderPipeline between passes (kopf memo)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    recommendations: list[scaling.Recommendation] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    ready: bool
    retry_after: float | None = None
    events: list[Event] = field(default_factory=list)


class ClientCache:
    """AWS clients per (region, endpoints, credentials): created once, shared by passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, ...], aws.Clients] = {}

    def get(self, spec: v1alpha1.AwsSpec, credentials: aws.Credentials | None) -> aws.Clients:
        key = (spec.region, spec.endpoints.sqs, spec.endpoints.dynamodb, credentials)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = aws.make_clients(spec, credentials)
            return self._clients[key]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(body: Mapping[str, Any]) -> builders.Owner:
    metadata = body["metadata"]
    return builders.Owner(
        name=metadata["name"], namespace=metadata["namespace"], uid=metadata["uid"]
    )


def owner_tag(owner: builders.Owner) -> str:
    return f"{owner.namespace}.{owner.name}"


def aws_clients(
    kube: Kube, cache: ClientCache, namespace: str, spec: v1alpha1.OrderPipelineSpec
) -> aws.Clients:
    credentials_spec = spec.aws.credentials
    credentials = None
    if credentials_spec.source == "Secret" and credentials_spec.secret_ref is not None:
        keys = kube.read_secret_keys(namespace, credentials_spec.secret_ref.name)
        credentials = aws.Credentials(
            access_key_id=keys.get("AWS_ACCESS_KEY_ID", ""),
            secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY", ""),
        )
    return cache.get(spec.aws, credentials)


def _scale_step(
    *,
    kube: Kube,
    clients: aws.Clients,
    owner: builders.Owner,
    spec: v1alpha1.OrderPipelineSpec,
    queue: aws.QueueInfo,
    memory: PipelineMemory,
    outcome: Outcome,
) -> tuple[conditions.Condition, int]:
    """Read the depth, decide, scale; return ScalingReady and the replicas the processor should
    have now."""
    scaling_spec = spec.processor.scaling
    depth = aws.queue_depth(clients.sqs, queue.url)
    dlq_depth = aws.queue_depth(clients.sqs, queue.dlq_url)
    backlog = depth.backlog(count_in_flight=scaling_spec.count_in_flight)
    outcome.status["queue"].update(
        {
            "backlog": depth.visible + depth.in_flight,
            "visible": depth.visible,
            "inFlight": depth.in_flight,
            "dlqDepth": dlq_depth.visible + dlq_depth.in_flight,
        }
    )
    name = builders.processor_name(owner)
    state = kube.deployment_state(owner.namespace, name)
    now = time.time()
    memory.recommendations = scaling.prune_history(
        memory.recommendations, now=now, cooldown_seconds=scaling_spec.cooldown_seconds
    )
    if not memory.recommendations and state.exists:
        # After a restart nothing is remembered: treat the current count as just recommended,
        # so a restart never shortens a cooldown.
        memory.recommendations.append(scaling.Recommendation(now, state.spec_replicas))
    decision = scaling.decide(
        current=state.spec_replicas,
        backlog=backlog,
        scaling=scaling_spec,
        history=memory.recommendations,
        now=now,
    )
    memory.recommendations.append(scaling.Recommendation(now, decision.desired))
    previous_status = outcome.status.get("processor", {})
    processor_status: dict[str, Any] = {
        "desiredReplicas": decision.desired,
        "currentReplicas": decision.replicas,
        "readyReplicas": state.ready_replicas,
    }
    if "lastScaleTime" in previous_status:
        processor_status["lastScaleTime"] = previous_status["lastScaleTime"]
    if state.exists and decision.replicas != state.spec_replicas:
        kube.scale_deployment(owner.namespace, name, decision.replicas)
        processor_status["lastScaleTime"] = now_iso()
        direction = "ScaledUp" if decision.replicas > state.spec_replicas else "ScaledDown"
        metrics.SCALING_DECISIONS.labels(direction=direction).inc()
        message = (
            f"processor {state.spec_replicas} -> {decision.replicas} replicas "
            f"(backlog {backlog}, {scaling_spec.target_messages_per_replica} per replica)"
        )
        outcome.events.append(Event("Normal", direction, message))
        logger.info("%s/%s: %s", owner.namespace, owner.name, message)
    outcome.status["processor"] = processor_status
    message = (
        f"backlog {backlog}: desired {decision.desired}, running {decision.replicas} "
        f"({decision.reason})"
    )
    return conditions.Condition(conditions.SCALING_READY, "True", decision.reason, message), (
        decision.replicas
    )


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
    old_status: Mapping[str, Any] = body.get("status") or {}
    spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])
    outcome = Outcome(
        status={"queue": {}, "processor": dict(old_status.get("processor") or {})}, ready=False
    )
    found: list[conditions.Condition] = []

    def progress(after: float) -> None:
        outcome.retry_after = min(outcome.retry_after or after, after)

    queue_info: aws.QueueInfo | None = None
    clients: aws.Clients | None = None
    try:
        clients = aws_clients(kube, cache, owner.namespace, spec)
        queue_info = aws.ensure_queues(clients.sqs, spec.queue, owner=owner_tag(owner))
        outcome.status["queue"] = {
            "url": queue_info.url,
            "arn": queue_info.arn,
            "dlqUrl": queue_info.dlq_url,
            "dlqArn": queue_info.dlq_arn,
        }
        found.append(
            conditions.Condition(
                conditions.QUEUES_READY,
                "True",
                "Converged",
                f"{spec.queue.name} redrives to {spec.queue.dlq_name} after "
                f"{spec.queue.max_receive_count} receives",
            )
        )
    except aws.NameConflict as error:
        found.append(
            conditions.Condition(conditions.QUEUES_READY, "False", "NameConflict", str(error))
        )
    except aws.AwsRejected as error:
        found.append(
            conditions.Condition(conditions.QUEUES_READY, "False", "AwsRejected", str(error))
        )
    except aws.Transient as error:
        found.append(
            conditions.Condition(conditions.QUEUES_READY, "False", "EngineUnavailable", str(error))
        )
        progress(PROGRESS_RETRY_SECONDS * 5)
    except client.ApiException as error:
        if error.status != 404:
            raise
        found.append(
            conditions.Condition(
                conditions.QUEUES_READY, "False", "CredentialsSecretMissing", error.reason or ""
            )
        )
        progress(PROGRESS_RETRY_SECONDS * 5)

    if clients is not None:
        try:
            pending = aws.ensure_tables(clients.dynamodb, spec.tables)
            outcome.status["tables"] = spec.tables.names
            if pending:
                found.append(
                    conditions.Condition(
                        conditions.TABLES_READY, "False", "Creating", f"waiting for {pending}"
                    )
                )
                progress(PROGRESS_RETRY_SECONDS)
            else:
                found.append(
                    conditions.Condition(
                        conditions.TABLES_READY,
                        "True",
                        "Active",
                        f"{len(spec.tables.names)} tables",
                    )
                )
        except aws.AwsRejected as error:
            found.append(
                conditions.Condition(conditions.TABLES_READY, "False", "AwsRejected", str(error))
            )
        except aws.Transient as error:
            found.append(
                conditions.Condition(
                    conditions.TABLES_READY, "False", "EngineUnavailable", str(error)
                )
            )
            progress(PROGRESS_RETRY_SECONDS * 5)
    else:
        found.append(
            conditions.Condition(conditions.TABLES_READY, "Unknown", "NoCredentials", "see queues")
        )

    for manifest in builders.build_children(owner, spec):
        kube.apply(manifest)

    processor_wanted = int(outcome.status["processor"].get("currentReplicas", 0))
    if queue_info is not None and clients is not None:
        try:
            scaling_condition, processor_wanted = _scale_step(
                kube=kube,
                clients=clients,
                owner=owner,
                spec=spec,
                queue=queue_info,
                memory=memory,
                outcome=outcome,
            )
            found.append(scaling_condition)
        except aws.AwsRejected as error:
            found.append(
                conditions.Condition(conditions.SCALING_READY, "False", "AwsRejected", str(error))
            )
        except aws.Transient as error:
            found.append(
                conditions.Condition(
                    conditions.SCALING_READY, "False", "QueueDepthUnavailable", str(error)
                )
            )
    else:
        found.append(
            conditions.Condition(conditions.SCALING_READY, "False", "NoQueue", "queues not ready")
        )

    api = kube.deployment_state(owner.namespace, builders.api_name(owner))
    processor = kube.deployment_state(owner.namespace, builders.processor_name(owner))
    api_wanted = spec.api.autoscaling.min_replicas
    outcome.status["api"] = {"readyReplicas": api.ready_replicas}
    outcome.status["processor"]["readyReplicas"] = processor.ready_replicas
    workloads = conditions.workloads_condition(
        api_ready=api.ready_replicas if api.observed_current else 0,
        api_wanted=api_wanted,
        processor_ready=min(processor.ready_replicas, processor.updated_replicas)
        if processor.observed_current
        else 0,
        processor_wanted=processor_wanted,
    )
    found.append(workloads)
    if workloads.status != "True":
        progress(PROGRESS_RETRY_SECONDS)

    summary = conditions.summary(found)
    outcome.ready = summary.status == "True"
    outcome.status["conditions"] = conditions.merge(
        conditions.without(old_status.get("conditions") or [], conditions.DELETION_BLOCKED),
        [*found, summary],
        generation=generation,
        now=now_iso(),
    )
    outcome.status["observedGeneration"] = generation
    return outcome


@dataclass(frozen=True)
class Finalized:
    done: bool
    waiting: int
    event: Event


def finalize(body: Mapping[str, Any], *, kube: Kube, cache: ClientCache) -> Finalized:
    """Deletion: Retain keeps everything; Delete removes queues and tables once drained."""
    owner = owner_of(body)
    spec = v1alpha1.OrderPipelineSpec.model_validate(body["spec"])
    tables = ", ".join(spec.tables.names)
    if spec.queue.deletion_policy == "Retain":
        return Finalized(
            True,
            0,
            Event(
                "Normal",
                "Retained",
                f"deletionPolicy Retain: kept queues {spec.queue.name}, {spec.queue.dlq_name} "
                f"and tables {tables}",
            ),
        )
    clients = aws_clients(kube, cache, owner.namespace, spec)
    waiting = aws.messages_waiting(clients.sqs, spec.queue)
    if waiting:
        return Finalized(
            False,
            waiting,
            Event(
                "Warning",
                "DeletionBlocked",
                conditions.deletion_blocked(waiting, spec.queue.name).message,
            ),
        )
    aws.delete_queues(clients.sqs, spec.queue)
    aws.delete_tables(clients.dynamodb, spec.tables)
    return Finalized(
        True,
        0,
        Event(
            "Normal",
            "Deleted",
            f"deletionPolicy Delete: removed empty queues {spec.queue.name}, "
            f"{spec.queue.dlq_name} and tables {tables}",
        ),
    )
