"""Observe: read what exists into plain, immutable snapshots (the I/O before any decision).

Cloud resources come through `aws`, Kubernetes objects through `kube`. An error that a pass
reports in a condition (and retries on the next pass) becomes a `Failure` in the snapshot; an
error worth kopf's retry with backoff (the Kubernetes API is down) is raised.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from order_operator import aws, builders
from order_operator.kube import DeploymentState, Kube
from order_operator.scaling import QueueDepth
from order_operator.v1alpha1 import spec as v1alpha1


@dataclass(frozen=True)
class Failure:
    """Why a part could not be observed or converged: a condition's reason and message."""

    reason: str
    message: str


def failure(error: aws.AwsRejected | aws.Transient, *, transient_reason: str) -> Failure:
    if isinstance(error, aws.AwsRejected):
        return Failure("AwsRejected", str(error))
    return Failure(transient_reason, str(error))


ENGINE_UNAVAILABLE = "EngineUnavailable"
CREDENTIALS_SECRET_MISSING = "CredentialsSecretMissing"  # noqa: S105 - a reason, not a secret
QUEUE_DEPTH_UNAVAILABLE = "QueueDepthUnavailable"


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


@dataclass(frozen=True)
class CloudSnapshot:
    queues: aws.ObservedQueues | Failure
    tables: tuple[aws.ObservedTable, ...] | Failure | None
    """None: not looked at, for want of AWS credentials."""


def observe_cloud(
    kube: Kube, cache: ClientCache, owner: builders.Owner, spec: v1alpha1.OrderPipelineSpec
) -> tuple[aws.Clients | None, CloudSnapshot]:
    """The queues and tables as they are, and the clients that reached them (None without
    credentials)."""
    try:
        clients = aws_clients(kube, cache, owner.namespace, spec)
    except client.ApiException as error:
        if error.status != 404:
            raise
        missing = Failure(CREDENTIALS_SECRET_MISSING, error.reason or "")
        return None, CloudSnapshot(queues=missing, tables=None)
    queues: aws.ObservedQueues | Failure
    try:
        queues = aws.observe_queues(clients.sqs, spec.queue)
    except (aws.AwsRejected, aws.Transient) as error:
        queues = failure(error, transient_reason=ENGINE_UNAVAILABLE)
    tables: tuple[aws.ObservedTable, ...] | Failure
    try:
        tables = aws.observe_tables(clients.dynamodb, spec.tables)
    except (aws.AwsRejected, aws.Transient) as error:
        tables = failure(error, transient_reason=ENGINE_UNAVAILABLE)
    return clients, CloudSnapshot(queues=queues, tables=tables)


@dataclass(frozen=True)
class ScalingSnapshot:
    """What a scaling step decides from; read after the children are applied, so a new
    processor Deployment is already there."""

    depth: QueueDepth
    dlq_depth: QueueDepth
    processor: DeploymentState
    now: float
    """When it was read (seconds since the epoch): the time of this step's recommendation."""


def observe_scaling(
    kube: Kube,
    clients: aws.Clients,
    owner: builders.Owner,
    queue: aws.QueueInfo,
) -> ScalingSnapshot | Failure:
    try:
        depth = aws.queue_depth(clients.sqs, queue.url)
        dlq_depth = aws.queue_depth(clients.sqs, queue.dlq_url)
    except (aws.AwsRejected, aws.Transient) as error:
        return failure(error, transient_reason=QUEUE_DEPTH_UNAVAILABLE)
    processor = kube.deployment_state(owner.namespace, builders.processor_name(owner))
    return ScalingSnapshot(depth=depth, dlq_depth=dlq_depth, processor=processor, now=time.time())


def with_canary_pods(
    kube: Kube, owner: builders.Owner, snapshot: ScalingSnapshot
) -> ScalingSnapshot:
    """The processor counted with its canary pods: the scaler sizes the whole consumer fleet,
    which a rollout splits between the two Deployments."""
    canary = kube.deployment_state(
        owner.namespace, builders.deployment_name(owner, "processor", builders.CANARY)
    )
    return dataclasses.replace(snapshot, processor=_both_tracks(snapshot.processor, canary))


@dataclass(frozen=True)
class DeletionSnapshot:
    """What one attempt at a Delete decides from."""

    queues: aws.ObservedQueues
    tables: tuple[aws.ObservedTable, ...]
    depth: QueueDepth | None
    """The main queue's; None when it does not exist."""
    dlq_depth: QueueDepth | None
    pods: int
    """Pods of the API and the processor, terminating ones included (they may still hold
    messages in flight)."""


def observe_deletion(
    kube: Kube, cache: ClientCache, owner: builders.Owner, spec: v1alpha1.OrderPipelineSpec
) -> tuple[aws.Clients | None, DeletionSnapshot | Failure]:
    try:
        clients = aws_clients(kube, cache, owner.namespace, spec)
    except client.ApiException as error:
        if error.status != 404:
            raise
        return None, Failure(CREDENTIALS_SECRET_MISSING, f"Secret not found: {error.reason}")
    try:
        queues = aws.observe_queues(clients.sqs, spec.queue)
        tables = aws.observe_tables(clients.dynamodb, spec.tables)
        depth, dlq_depth = (
            aws.queue_depth(clients.sqs, seen.url) if seen is not None else None
            for seen in (queues.main, queues.dlq)
        )
    except (aws.AwsRejected, aws.Transient) as error:
        return clients, failure(error, transient_reason=ENGINE_UNAVAILABLE)
    pods = sum(
        kube.count_pods(owner.namespace, builders.selector_labels(owner, component))
        for component in ("api", "processor")
    )
    return clients, DeletionSnapshot(
        queues=queues, tables=tables, depth=depth, dlq_depth=dlq_depth, pods=pods
    )


@dataclass(frozen=True)
class WorkloadsSnapshot:
    """Both Deployments at the end of a pass (after any scaling)."""

    api: DeploymentState
    processor: DeploymentState


def observe_workloads(
    kube: Kube, owner: builders.Owner, *, with_canaries: bool = False
) -> WorkloadsSnapshot:
    """`with_canaries`: the processor's pods counted over both tracks, as the scaler's count
    is split between them during a rollout."""
    processor = kube.deployment_state(owner.namespace, builders.processor_name(owner))
    if with_canaries:
        canary = kube.deployment_state(
            owner.namespace, builders.deployment_name(owner, "processor", builders.CANARY)
        )
        processor = _both_tracks(processor, canary)
    return WorkloadsSnapshot(
        api=kube.deployment_state(owner.namespace, builders.api_name(owner)),
        processor=processor,
    )


def _both_tracks(stable: DeploymentState, canary: DeploymentState) -> DeploymentState:
    if not canary.exists:
        return stable
    return dataclasses.replace(
        stable,
        spec_replicas=stable.spec_replicas + canary.spec_replicas,
        ready_replicas=stable.ready_replicas + canary.ready_replicas,
        updated_replicas=stable.updated_replicas + canary.updated_replicas,
        observed_current=stable.observed_current and canary.observed_current,
    )
