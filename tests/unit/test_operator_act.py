"""Carrying plans out: the calls that reach SQS and Kubernetes, with fakes only at those two
boundaries (an in-memory SQS client, a recording Kube)."""

from __future__ import annotations

import json
from typing import Any, cast

import botocore.exceptions

from order_operator import act, aws, builders, decide, scaling
from order_operator.observe import Failure
from order_operator.v1alpha1 import spec as v1alpha1

OWNER = builders.Owner(name="shop", namespace="team-a", uid="1234")


class FakeSqs:
    """Queues in a dict behind boto's method and keyword names; every write is recorded;
    `unavailable` names an operation that fails as an unreachable engine would."""

    def __init__(self, unavailable: str | None = None, log: list[str] | None = None) -> None:
        self.queues: dict[str, dict[str, str]] = {}
        self.writes: list[tuple[str, str]] = []
        self.unavailable = unavailable
        self.log = log if log is not None else []

    def _check(self, operation: str) -> None:
        if operation == self.unavailable:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "ServiceUnavailable", "Message": "engine down"}}, operation
            )

    def create_queue(self, QueueName: str, Attributes: dict[str, str], tags: dict[str, str]) -> Any:
        self._check("CreateQueue")
        url = f"http://sqs/{QueueName}"
        self.queues[url] = {**Attributes, "QueueArn": f"arn:fake:{QueueName}"}
        self.writes.append(("CreateQueue", QueueName))
        return {"QueueUrl": url}

    def set_queue_attributes(self, QueueUrl: str, Attributes: dict[str, str]) -> None:
        self.queues[QueueUrl].update(Attributes)
        self.writes.append(("SetQueueAttributes", QueueUrl))

    def tag_queue(self, QueueUrl: str, Tags: dict[str, str]) -> None:
        self.writes.append(("TagQueue", QueueUrl))

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> Any:
        return {"Attributes": {name: self.queues[QueueUrl][name] for name in AttributeNames}}

    def delete_queue(self, QueueUrl: str) -> None:
        self.writes.append(("DeleteQueue", QueueUrl))
        self.log.append(f"delete queue {QueueUrl}")


class RecordingKube:
    def __init__(self, log: list[str] | None = None) -> None:
        self.applied: list[str] = []
        self.scaled: list[tuple[str, str, int]] = []
        self.manifests: list[dict[str, Any]] = []
        self.log = log if log is not None else []

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
        self.manifests.append(manifest)
        self.log.append(f"apply {self.applied[-1]}")

    def stop_deployment(self, namespace: str, name: str) -> None:
        self.log.append(f"stop {name}")

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((namespace, name, replicas))


SPEC = v1alpha1.OrderPipelineSpec.model_validate(
    {
        "queue": {"name": "shop-orders", "maxReceiveCount": 4},
        "tables": {"prefix": "shop-"},
        "api": {"image": "api:1"},
        "processor": {"image": "processor:1"},
    }
)


def run(
    plan: decide.QueuesPlan, sqs: FakeSqs, kube: RecordingKube | None = None
) -> act.CloudResult:
    return act.act(
        decide.Plan(queues=plan, tables=None, children=()),
        clients=aws.Clients(sqs=cast(Any, sqs), dynamodb=cast(Any, None)),
        kube=cast(Any, kube or RecordingKube()),
        spec=SPEC,
        owner=OWNER,
    )


def fresh_plan() -> decide.QueuesPlan:
    return decide.decide_queues(SPEC, OWNER, aws.ObservedQueues(dlq=None, main=None))


def test_fresh_queues_redrive_to_the_dlq_created_in_the_same_pass() -> None:
    sqs = FakeSqs()
    result = run(fresh_plan(), sqs)

    assert result.queues == aws.QueueInfo(
        url="http://sqs/shop-orders",
        arn="arn:fake:shop-orders",
        dlq_url="http://sqs/shop-orders-dlq",
        dlq_arn="arn:fake:shop-orders-dlq",
    )
    assert sqs.writes == [("CreateQueue", "shop-orders-dlq"), ("CreateQueue", "shop-orders")]
    redrive = json.loads(sqs.queues["http://sqs/shop-orders"]["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": "arn:fake:shop-orders-dlq", "maxReceiveCount": 4}


def test_main_queue_of_another_pipeline_leaves_even_our_missing_dlq_uncreated() -> None:
    sqs = FakeSqs()
    theirs = aws.ObservedQueue(
        url="http://sqs/shop-orders", tags={aws.OWNER_TAG: "team-b/other"}, attributes={}
    )
    plan = decide.decide_queues(SPEC, OWNER, aws.ObservedQueues(dlq=None, main=theirs))

    result = run(plan, sqs)

    assert result.queues == Failure(
        "NameConflict", "queue shop-orders belongs to OrderPipeline team-b/other"
    )
    assert sqs.writes == []


def test_engine_failing_midway_is_reported_with_what_was_being_done() -> None:
    sqs = FakeSqs(unavailable="CreateQueue")
    result = run(fresh_plan(), sqs)
    assert result.queues == Failure(
        "EngineUnavailable",
        "converging queue shop-orders: ServiceUnavailable: engine down",
    )


def test_children_are_applied_in_order_even_when_aws_failed() -> None:
    kube = RecordingKube()
    act.act(
        decide.Plan(
            queues=Failure("CredentialsSecretMissing", "Not Found"),
            tables=None,
            children=tuple(builders.build_children(OWNER, SPEC)),
        ),
        clients=None,
        kube=cast(Any, kube),
        spec=SPEC,
        owner=OWNER,
    )
    assert kube.applied == [
        "Deployment/shop-api",
        "Deployment/shop-processor",
        "Service/shop-api",
        "Service/shop-processor-metrics",
        "HorizontalPodAutoscaler/shop-api",
        "PodDisruptionBudget/shop-api",
        "PodDisruptionBudget/shop-processor",
    ]


def test_scaling_remembers_the_recommendations_and_scales_the_processor() -> None:
    kube = RecordingKube()
    memory = [scaling.Recommendation(1.0, 1)]
    plan = decide.ScalePlan(
        backlog=1000,
        decision=scaling.Decision(desired=10, replicas=10, reason="ScaleUp"),
        history=(scaling.Recommendation(5.0, 10),),
        scale_to=10,
        event=decide.Event("Normal", "ScaledUp", "processor 1 -> 10 replicas"),
    )
    act.act_scaling(cast(Any, kube), OWNER, plan, memory)
    assert memory == [scaling.Recommendation(5.0, 10)]
    assert kube.scaled == [("team-a", "shop-processor", 10)]


class RecordingDynamoDb:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.exceptions = type("Exceptions", (), {"ResourceNotFoundException": KeyError})

    def delete_table(self, TableName: str) -> None:
        self.log.append(f"delete table {TableName}")


def test_deletion_stops_the_api_service_then_both_workloads_then_deletes_queues_and_tables() -> (
    None
):
    log: list[str] = []
    sqs, kube = FakeSqs(log=log), RecordingKube(log)
    plan = decide.DeletionPlan(
        done=True,
        event=decide.Event("Normal", "Deleted", "removed"),
        stop_intake=True,
        stop_processor=True,
        delete_queues=("http://sqs/shop-orders", "http://sqs/shop-orders-dlq"),
        delete_tables=("shop-orders",),
    )
    act.act_deletion(
        cast(Any, kube),
        aws.Clients(sqs=cast(Any, sqs), dynamodb=cast(Any, RecordingDynamoDb(log))),
        OWNER,
        plan,
    )
    assert log == [
        "apply Service/shop-api",
        "stop shop-api",
        # A canary a rollout left running would hold the deletion (it waits for every pod).
        "stop shop-api-canary",
        "stop shop-processor",
        "stop shop-processor-canary",
        "delete queue http://sqs/shop-orders",
        "delete queue http://sqs/shop-orders-dlq",
        "delete table shop-orders",
    ]
    (service,) = kube.manifests
    assert service["spec"]["selector"] == {
        **builders.selector_labels(OWNER, "api"),
        "order-pipeline.dev/serving": "stopped",
    }
