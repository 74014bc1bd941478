"""Act: carry out a plan from `decide` through the adapters (`aws`, `kube`), and say how it went.

AWS errors a pass reports in a condition come back as a `Failure`; Kubernetes API errors are
raised for kopf's retry with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from order_operator import aws, builders, metrics
from order_operator.decide import (
    Conflict,
    CreateQueue,
    CreateTable,
    DeletionPlan,
    Plan,
    QueuesPlan,
    QueueStep,
    ScalePlan,
    TablesPlan,
    TagTable,
    decide_main_queue,
)
from order_operator.kube import Kube
from order_operator.observe import ENGINE_UNAVAILABLE, Failure, failure
from order_operator.scaling import Recommendation
from order_operator.v1alpha1 import spec as v1alpha1

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

NAME_CONFLICT = "NameConflict"
"""The reason of a queue or table condition when one of them is not this pipeline's."""


@dataclass(frozen=True)
class CloudResult:
    queues: aws.QueueInfo | Failure
    tables: tuple[str, ...] | Failure | None
    """The tables not ACTIVE yet; None: not looked at, for want of AWS credentials."""


def _carry_out(sqs: SQSClient, step: QueueStep) -> tuple[str, str]:
    """The queue's URL and ARN once the step is done."""
    if isinstance(step, CreateQueue):
        url = aws.create_queue(sqs, step.name, step.attributes, step.tags)
    else:
        url = step.url
        if step.attributes:
            aws.set_queue_attributes(sqs, step.name, url, step.attributes)
        if step.tags:
            aws.tag_queue(sqs, url, step.tags)
    return url, aws.queue_arn(sqs, url)


def _converge_queues(
    sqs: SQSClient, plan: QueuesPlan, spec: v1alpha1.OrderPipelineSpec, owner: builders.Owner
) -> aws.QueueInfo | Failure:
    try:
        with aws.translated(aws.converging_queue(spec.queue)):
            located = [_carry_out(sqs, step) for step in plan.steps]
            conflict = plan.conflict
            if plan.main_after_dlq is not None:
                ((_, dlq_arn),) = located
                main = decide_main_queue(spec, owner, plan.main_after_dlq.observed, dlq_arn)
                if isinstance(main, Conflict):
                    conflict = main
                else:
                    located.append(_carry_out(sqs, main))
    except (aws.AwsRejected, aws.Transient) as error:
        return failure(error, transient_reason=ENGINE_UNAVAILABLE)
    if conflict is not None:
        return Failure(NAME_CONFLICT, conflict.message)
    (dlq_url, dlq_arn), (url, arn) = located
    return aws.QueueInfo(url=url, arn=arn, dlq_url=dlq_url, dlq_arn=dlq_arn)


def _converge_tables(dynamodb: DynamoDBClient, plan: TablesPlan) -> tuple[str, ...] | Failure:
    if plan.conflict is not None:
        return Failure(NAME_CONFLICT, plan.conflict.message)
    try:
        with aws.translated(aws.CONVERGING_TABLES):
            for step in plan.steps:
                if isinstance(step, CreateTable):
                    aws.create_table(dynamodb, step.name, step.key, step.tags)
                elif isinstance(step, TagTable):
                    aws.tag_table(dynamodb, step.name, step.arn, step.tags)
                else:
                    aws.enable_ttl(dynamodb, step.name, step.attribute)
    except (aws.AwsRejected, aws.Transient) as error:
        return failure(error, transient_reason=ENGINE_UNAVAILABLE)
    return plan.pending


def _needed(clients: aws.Clients | None) -> aws.Clients:
    if clients is None:
        # observe_cloud gives clients whenever it observed queues or tables.
        raise ValueError("AWS resources planned without AWS clients")
    return clients


def act(
    plan: Plan,
    *,
    clients: aws.Clients | None,
    kube: Kube,
    spec: v1alpha1.OrderPipelineSpec,
    owner: builders.Owner,
) -> CloudResult:
    """Queues, then tables, then the Kubernetes children (applied whatever AWS said)."""
    queues = (
        plan.queues
        if isinstance(plan.queues, Failure)
        else _converge_queues(_needed(clients).sqs, plan.queues, spec, owner)
    )
    tables = (
        _converge_tables(_needed(clients).dynamodb, plan.tables)
        if isinstance(plan.tables, TablesPlan)
        else plan.tables
    )
    for manifest in plan.children:
        kube.apply(manifest)
    return CloudResult(queues=queues, tables=tables)


def act_scaling(
    kube: Kube,
    owner: builders.Owner,
    plan: ScalePlan,
    history: list[Recommendation],
    *,
    scale: bool = True,
) -> None:
    """Remember the recommendations (in place: the pipeline's memory), then scale if planned;
    `scale` False leaves the count to the rollout step, which splits it with the canary."""
    history[:] = plan.history
    if plan.scale_to is None or plan.event is None:
        return
    if scale:
        kube.scale_deployment(owner.namespace, builders.processor_name(owner), plan.scale_to)
    metrics.SCALING_DECISIONS.labels(direction=plan.event.reason).inc()
    logger.info("%s/%s: %s", owner.namespace, owner.name, plan.event.message)


def act_deletion(
    kube: Kube, clients: aws.Clients | None, owner: builders.Owner, plan: DeletionPlan
) -> None:
    """The API first (its Service stops selecting pods, then it scales to zero; its HPA leaves a
    Deployment at zero alone), then the processor, then the queues and tables."""
    if plan.stop_intake:
        kube.apply(builders.build_api_service(owner, serving=False))
        _stop_both_tracks(kube, owner, "api")
    if plan.stop_processor:
        _stop_both_tracks(kube, owner, "processor")
    if plan.delete_queues or plan.delete_tables:
        deleting = _needed(clients)
        aws.delete_queues(deleting.sqs, plan.delete_queues)
        aws.delete_tables(deleting.dynamodb, plan.delete_tables)
    logger.info("%s/%s: %s", owner.namespace, owner.name, plan.event.message)


def _stop_both_tracks(kube: Kube, owner: builders.Owner, component: builders.Component) -> None:
    """The stable Deployment and a canary, if a rollout left one with pods, to zero."""
    for track in (builders.STABLE, builders.CANARY):
        kube.stop_deployment(owner.namespace, builders.deployment_name(owner, component, track))
