"""Reconcile decisions as plain data: what a pass creates, converges, scales or deletes, from a
spec and a snapshot of what exists."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from order_operator import aws, builders, decide, scaling
from order_operator.kube import DeploymentState
from order_operator.observe import CloudSnapshot, Failure, ScalingSnapshot
from order_operator.v1alpha1 import spec as v1alpha1

OWNER = builders.Owner(name="shop", namespace="team-a", uid="1234")
OWNER_TAG = {aws.OWNER_TAG: "team-a.shop"}
DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:shop-orders-dlq"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:shop-orders"
TABLES = ("orders", "catalog", "idempotency", "velocity", "payments")


def make_spec(**overrides: Any) -> v1alpha1.OrderPipelineSpec:
    raw: dict[str, Any] = {
        "queue": {
            "name": "shop-orders",
            "visibilityTimeoutSeconds": 20,
            "maxReceiveCount": 4,
            "tags": {"team": "a"},
        },
        "tables": {"prefix": "shop-"},
        "api": {"image": "api:1"},
        "processor": {
            "image": "processor:1",
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": 20,
                "targetMessagesPerReplica": 100,
                "cooldownSeconds": 60,
            },
        },
    }
    raw.update(overrides)
    return v1alpha1.OrderPipelineSpec.model_validate(raw)


SPEC = make_spec()


def converged_queues(spec: v1alpha1.OrderPipelineSpec = SPEC) -> aws.ObservedQueues:
    """Both queues as the operator leaves them: its attributes, its tags, plus SQS's own."""
    tags = {"team": "a", **OWNER_TAG}
    return aws.ObservedQueues(
        dlq=aws.ObservedQueue(
            url="http://sqs/shop-orders-dlq",
            tags=tags,
            attributes={**aws.dlq_attributes(spec.queue), "QueueArn": DLQ_ARN},
        ),
        main=aws.ObservedQueue(
            url="http://sqs/shop-orders",
            tags=tags,
            attributes={
                **aws.queue_attributes(spec.queue, DLQ_ARN),
                "QueueArn": QUEUE_ARN,
                "ApproximateNumberOfMessages": "12",
            },
        ),
    )


def active_tables() -> tuple[aws.ObservedTable, ...]:
    return tuple(
        aws.ObservedTable(
            name=f"shop-{table}",
            exists=True,
            status="ACTIVE",
            ttl_status="ENABLED" if table in ("idempotency", "velocity") else None,
            ttl_attribute="expires_at" if table in ("idempotency", "velocity") else None,
        )
        for table in TABLES
    )


def test_fresh_pipeline_creates_the_dlq_then_the_queue_redriving_to_it_and_every_table() -> None:
    nothing = CloudSnapshot(
        queues=aws.ObservedQueues(dlq=None, main=None),
        tables=tuple(
            aws.ObservedTable(name=f"shop-{table}", exists=False, status=None) for table in TABLES
        ),
    )
    plan = decide.decide(SPEC, OWNER, nothing)

    assert isinstance(plan.queues, decide.QueuesPlan)
    assert plan.queues.steps == (
        decide.CreateQueue(
            name="shop-orders-dlq",
            attributes={"MessageRetentionPeriod": str(SPEC.queue.dlq_retention_seconds)},
            tags={"team": "a", **OWNER_TAG},
        ),
    )
    # The new DLQ's ARN goes into the main queue's redrive policy: decided once it exists.
    assert plan.queues.main_after_dlq == decide.MainQueueAfterDlq(observed=None)
    assert plan.queues.conflict is None
    main = decide.decide_main_queue(SPEC.queue, OWNER, None, DLQ_ARN)
    assert isinstance(main, decide.CreateQueue)
    assert main.name == "shop-orders"
    assert main.attributes["VisibilityTimeout"] == "20"
    assert json.loads(main.attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": DLQ_ARN,
        "maxReceiveCount": 4,
    }

    assert plan.tables == decide.TablesPlan(
        steps=(
            decide.CreateTable("shop-orders", key="order_id"),
            decide.CreateTable("shop-catalog", key="sku"),
            decide.CreateTable("shop-idempotency", key="key"),
            decide.CreateTable("shop-velocity", key="customer_id"),
            decide.CreateTable("shop-payments", key="order_id"),
        ),
        pending=tuple(f"shop-{table}" for table in TABLES),
    )
    assert [(child["kind"], child["metadata"]["name"]) for child in plan.children] == [
        ("Deployment", "shop-api"),
        ("Deployment", "shop-processor"),
        ("Service", "shop-api"),
        ("Service", "shop-processor-metrics"),
        ("HorizontalPodAutoscaler", "shop-api"),
        ("PodDisruptionBudget", "shop-api"),
        ("PodDisruptionBudget", "shop-processor"),
    ]


def test_everything_present_and_matching_plans_no_writes_but_still_applies_the_children() -> None:
    plan = decide.decide(SPEC, OWNER, CloudSnapshot(converged_queues(), active_tables()))

    assert plan.queues == decide.QueuesPlan(
        steps=(
            decide.UpdateQueue(
                name="shop-orders-dlq", url="http://sqs/shop-orders-dlq", attributes={}, tags={}
            ),
            decide.UpdateQueue(
                name="shop-orders", url="http://sqs/shop-orders", attributes={}, tags={}
            ),
        )
    )
    assert plan.tables == decide.TablesPlan(steps=(), pending=())
    assert len(plan.children) == 7


def test_drifted_queue_attributes_and_a_lost_tag_are_written_back_and_nothing_else() -> None:
    observed = converged_queues()
    assert observed.main is not None
    drifted = dataclasses.replace(
        observed.main,
        tags=OWNER_TAG,  # the spec's "team" tag was removed by hand
        attributes={
            **observed.main.attributes,
            "VisibilityTimeout": "300",
            # Same policy, other key order and a number as a string: not drift.
            "RedrivePolicy": json.dumps({"maxReceiveCount": "4", "deadLetterTargetArn": DLQ_ARN}),
        },
    )
    plan = decide.decide_queues(
        SPEC.queue, OWNER, aws.ObservedQueues(dlq=observed.dlq, main=drifted)
    )

    assert plan.steps[1] == decide.UpdateQueue(
        name="shop-orders",
        url="http://sqs/shop-orders",
        attributes={"VisibilityTimeout": "20"},
        tags={"team": "a"},
    )


def test_changed_max_receive_count_rewrites_the_redrive_policy() -> None:
    spec = make_spec(queue={"name": "shop-orders", "maxReceiveCount": 9, "tags": {"team": "a"}})
    plan = decide.decide_queues(spec.queue, OWNER, converged_queues())
    main = plan.steps[1]
    assert isinstance(main, decide.UpdateQueue)
    assert json.loads(main.attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": DLQ_ARN,
        "maxReceiveCount": 9,
    }


def test_dlq_of_another_pipeline_is_a_conflict_and_neither_queue_is_touched() -> None:
    observed = converged_queues()
    assert observed.dlq is not None
    taken = dataclasses.replace(observed.dlq, tags={aws.OWNER_TAG: "team-b.other"})
    plan = decide.decide_queues(SPEC.queue, OWNER, aws.ObservedQueues(dlq=taken, main=None))

    assert plan == decide.QueuesPlan(
        steps=(),
        conflict=decide.Conflict("queue shop-orders-dlq belongs to OrderPipeline team-b.other"),
    )


def test_main_queue_of_another_pipeline_is_a_conflict_after_converging_our_dlq() -> None:
    observed = converged_queues()
    assert observed.main is not None
    taken = dataclasses.replace(observed.main, tags={aws.OWNER_TAG: "team-b.other"})
    plan = decide.decide_queues(SPEC.queue, OWNER, aws.ObservedQueues(observed.dlq, taken))

    assert [step.name for step in plan.steps] == ["shop-orders-dlq"]
    assert plan.conflict == decide.Conflict(
        "queue shop-orders belongs to OrderPipeline team-b.other"
    )


def test_untagged_existing_queue_is_adopted_with_our_tags() -> None:
    observed = converged_queues()
    assert observed.dlq is not None
    untagged = dataclasses.replace(observed.dlq, tags={})
    plan = decide.decide_queues(SPEC.queue, OWNER, aws.ObservedQueues(untagged, observed.main))
    assert plan.steps[0] == decide.UpdateQueue(
        name="shop-orders-dlq",
        url="http://sqs/shop-orders-dlq",
        attributes={},
        tags={"team": "a", **OWNER_TAG},
    )
    assert plan.conflict is None


def test_tables_still_creating_wait_and_ttl_is_enabled_only_where_missing_or_wrong() -> None:
    orders, catalog, idempotency, velocity, payments = active_tables()
    observed = (
        orders,
        aws.ObservedTable(name=catalog.name, exists=True, status="CREATING"),
        aws.ObservedTable(
            name=idempotency.name,
            exists=True,
            status="ACTIVE",
            ttl_status="DISABLED",
            ttl_attribute=None,
        ),
        aws.ObservedTable(
            name=velocity.name,
            exists=True,
            status="ACTIVE",
            ttl_status="ENABLING",
            ttl_attribute="expires_at",
        ),
        payments,
    )
    assert decide.decide_tables(observed) == decide.TablesPlan(
        steps=(decide.EnableTimeToLive("shop-idempotency", attribute="expires_at"),),
        pending=("shop-catalog",),
    )


def test_what_could_not_be_observed_is_carried_into_the_plan() -> None:
    unreachable = Failure("EngineUnavailable", "converging queue shop-orders: boom")
    plan = decide.decide(SPEC, OWNER, CloudSnapshot(queues=unreachable, tables=None))
    assert plan.queues == unreachable
    assert plan.tables is None
    assert len(plan.children) == 7


def processor(replicas: int, *, exists: bool = True) -> DeploymentState:
    return DeploymentState(
        exists=exists,
        spec_replicas=replicas,
        ready_replicas=replicas,
        updated_replicas=replicas,
        observed_current=True,
    )


def at_depth(
    visible: int, in_flight: int = 0, *, running: DeploymentState | None = None
) -> ScalingSnapshot:
    """The queue's depth and the processor (one replica unless said) at t=1000 s."""
    return ScalingSnapshot(
        depth=scaling.QueueDepth(visible=visible, in_flight=in_flight),
        dlq_depth=scaling.QueueDepth(visible=0, in_flight=0),
        processor=running or processor(1),
        now=1000.0,
    )


POLICY = SPEC.processor.scaling


def test_backlog_scales_the_processor_up_at_once_with_an_event() -> None:
    plan = decide.decide_scaling(POLICY, at_depth(950, in_flight=50), history=[])

    assert plan.backlog == 1000
    assert plan.decision == scaling.Decision(desired=10, replicas=10, reason="ScaleUp")
    assert plan.scale_to == 10
    assert plan.event == decide.Event(
        "Normal", "ScaledUp", "processor 1 -> 10 replicas (backlog 1000, 100 per replica)"
    )
    # After a restart the current count is remembered as just recommended, then this one.
    assert plan.history == (
        scaling.Recommendation(1000.0, 1),
        scaling.Recommendation(1000.0, 10),
    )


def test_steady_backlog_changes_nothing() -> None:
    history = [scaling.Recommendation(990.0, 1)]
    plan = decide.decide_scaling(POLICY, at_depth(40), history)
    assert plan.decision.reason == "Steady"
    assert (plan.scale_to, plan.event) == (None, None)
    assert plan.history == (scaling.Recommendation(990.0, 1), scaling.Recommendation(1000.0, 1))


def test_drained_queue_holds_replicas_during_the_cooldown_then_scales_down() -> None:
    at_ten = at_depth(0, running=processor(10))
    recent = [scaling.Recommendation(970.0, 10)]
    held = decide.decide_scaling(POLICY, at_ten, recent)
    assert held.decision == scaling.Decision(desired=1, replicas=10, reason="CoolingDown")
    assert held.scale_to is None

    # The 10 is older than the 60 s cooldown, so forgotten; only 1 was wanted since.
    expired = [scaling.Recommendation(900.0, 10), scaling.Recommendation(950.0, 1)]
    down = decide.decide_scaling(POLICY, at_ten, expired)
    assert down.decision == scaling.Decision(desired=1, replicas=1, reason="ScaleDown")
    assert down.scale_to == 1
    assert down.event is not None
    assert (down.event.reason, down.event.message) == (
        "ScaledDown",
        "processor 10 -> 1 replicas (backlog 0, 100 per replica)",
    )
    assert down.history == (scaling.Recommendation(950.0, 1), scaling.Recommendation(1000.0, 1))


def test_after_a_restart_the_running_count_holds_for_a_cooldown() -> None:
    drained_at_ten = at_depth(0, running=processor(10))
    plan = decide.decide_scaling(POLICY, drained_at_ten, history=[])
    assert plan.decision == scaling.Decision(desired=1, replicas=10, reason="CoolingDown")
    assert plan.scale_to is None
    assert plan.history == (scaling.Recommendation(1000.0, 10), scaling.Recommendation(1000.0, 1))


def test_missing_processor_deployment_is_not_scaled() -> None:
    snapshot = at_depth(500, running=processor(0, exists=False))
    plan = decide.decide_scaling(POLICY, snapshot, history=[])
    assert plan.decision.desired == 5
    assert (plan.scale_to, plan.event) == (None, None)
    assert plan.history == (scaling.Recommendation(1000.0, 5),)


def test_in_flight_messages_are_not_backlog_when_the_spec_says_so() -> None:
    policy = make_spec(
        processor={"image": "p", "scaling": {"countInFlight": False, "cooldownSeconds": 60}}
    ).processor.scaling
    plan = decide.decide_scaling(policy, at_depth(100, in_flight=900), history=[])
    assert plan.backlog == 100
    assert plan.scale_to is None


def test_retain_keeps_everything() -> None:
    plan = decide.decide_deletion(SPEC, waiting=0)
    assert (plan.done, plan.delete_resources) == (True, False)
    assert plan.event == decide.Event(
        "Normal",
        "Retained",
        "deletionPolicy Retain: kept queues shop-orders, shop-orders-dlq and tables "
        "shop-orders, shop-catalog, shop-idempotency, shop-velocity, shop-payments",
    )


def test_delete_waits_while_messages_wait_then_deletes() -> None:
    spec = make_spec(queue={"name": "shop-orders", "deletionPolicy": "Delete"})
    blocked = decide.decide_deletion(spec, waiting=3)
    assert (blocked.done, blocked.delete_resources, blocked.waiting) == (False, False, 3)
    assert blocked.event.type == "Warning"
    assert blocked.event.reason == "DeletionBlocked"
    assert "3 message(s) still wait in shop-orders" in blocked.event.message

    empty = decide.decide_deletion(spec, waiting=0)
    assert (empty.done, empty.delete_resources) == (True, True)
    assert empty.event.reason == "Deleted"
    assert empty.event.message.startswith(
        "deletionPolicy Delete: removed empty queues shop-orders, shop-orders-dlq"
    )
