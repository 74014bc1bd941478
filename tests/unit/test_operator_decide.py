"""Reconcile decisions as plain data: what a pass creates, converges, scales or deletes, from a
spec and a snapshot of what exists."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from order_operator import aws, builders, decide, scaling
from order_operator.kube import DeploymentState
from order_operator.observe import CloudSnapshot, DeletionSnapshot, Failure, ScalingSnapshot
from order_operator.scaling import QueueDepth
from order_operator.v1alpha1 import spec as v1alpha1

OWNER = builders.Owner(name="shop", namespace="team-a", uid="1234")
OWNER_TAGS = {aws.OWNER_TAG: "team-a/shop", aws.OWNER_UID_TAG: "1234"}
DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:shop-orders-dlq"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:shop-orders"
THEIRS = {aws.OWNER_TAG: "team-b/other", aws.OWNER_UID_TAG: "5678"}
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
    tags = {"team": "a", **OWNER_TAGS}
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
            arn=f"arn:aws:dynamodb:us-east-1:000000000000:table/shop-{table}",
            tags=OWNER_TAGS,
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
            tags={"team": "a", **OWNER_TAGS},
        ),
    )
    # The new DLQ's ARN goes into the main queue's redrive policy: decided once it exists.
    assert plan.queues.main_after_dlq == decide.MainQueueAfterDlq(observed=None)
    assert plan.queues.conflict is None
    main = decide.decide_main_queue(SPEC, OWNER, None, DLQ_ARN)
    assert isinstance(main, decide.CreateQueue)
    assert main.name == "shop-orders"
    assert main.attributes["VisibilityTimeout"] == "20"
    assert json.loads(main.attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": DLQ_ARN,
        "maxReceiveCount": 4,
    }

    assert plan.tables == decide.TablesPlan(
        steps=(
            decide.CreateTable("shop-orders", key="order_id", tags=OWNER_TAGS),
            decide.CreateTable("shop-catalog", key="sku", tags=OWNER_TAGS),
            decide.CreateTable("shop-idempotency", key="key", tags=OWNER_TAGS),
            decide.CreateTable("shop-velocity", key="customer_id", tags=OWNER_TAGS),
            decide.CreateTable("shop-payments", key="order_id", tags=OWNER_TAGS),
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
        tags=OWNER_TAGS,  # the spec's "team" tag was removed by hand
        attributes={
            **observed.main.attributes,
            "VisibilityTimeout": "300",
            # Same policy, other key order and a number as a string: not drift.
            "RedrivePolicy": json.dumps({"maxReceiveCount": "4", "deadLetterTargetArn": DLQ_ARN}),
        },
    )
    plan = decide.decide_queues(SPEC, OWNER, aws.ObservedQueues(dlq=observed.dlq, main=drifted))

    assert plan.steps[1] == decide.UpdateQueue(
        name="shop-orders",
        url="http://sqs/shop-orders",
        attributes={"VisibilityTimeout": "20"},
        tags={"team": "a"},
    )


def test_changed_max_receive_count_rewrites_the_redrive_policy() -> None:
    spec = make_spec(queue={"name": "shop-orders", "maxReceiveCount": 9, "tags": {"team": "a"}})
    plan = decide.decide_queues(spec, OWNER, converged_queues())
    main = plan.steps[1]
    assert isinstance(main, decide.UpdateQueue)
    assert json.loads(main.attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": DLQ_ARN,
        "maxReceiveCount": 9,
    }


def test_dlq_of_another_pipeline_is_a_conflict_and_neither_queue_is_touched() -> None:
    observed = converged_queues()
    assert observed.dlq is not None
    taken = dataclasses.replace(observed.dlq, tags=THEIRS)
    plan = decide.decide_queues(SPEC, OWNER, aws.ObservedQueues(dlq=taken, main=None))

    assert plan == decide.QueuesPlan(
        steps=(),
        conflict=decide.Conflict("queue shop-orders-dlq belongs to OrderPipeline team-b/other"),
    )


def test_main_queue_of_another_pipeline_is_a_conflict_and_not_even_our_dlq_is_written() -> None:
    observed = converged_queues()
    assert observed.main is not None
    taken = dataclasses.replace(observed.main, tags=THEIRS)
    for dlq in (observed.dlq, None):
        plan = decide.decide_queues(SPEC, OWNER, aws.ObservedQueues(dlq, taken))
        assert plan == decide.QueuesPlan(
            steps=(),
            conflict=decide.Conflict("queue shop-orders belongs to OrderPipeline team-b/other"),
        )


def test_untagged_existing_queue_is_a_conflict_unless_the_spec_adopts_it() -> None:
    observed = converged_queues()
    assert observed.dlq is not None
    untagged = dataclasses.replace(observed.dlq, tags={})
    queues = aws.ObservedQueues(untagged, observed.main)

    refused = decide.decide_queues(SPEC, OWNER, queues)
    assert refused == decide.QueuesPlan(
        steps=(),
        conflict=decide.Conflict(
            "queue shop-orders-dlq exists and has no owner tag; set spec.adopt to take it over"
        ),
    )

    adopted = decide.decide_queues(make_spec(adopt=True), OWNER, queues)
    assert adopted.steps[0] == decide.UpdateQueue(
        name="shop-orders-dlq",
        url="http://sqs/shop-orders-dlq",
        attributes={},
        tags={"team": "a", **OWNER_TAGS},
    )
    assert adopted.conflict is None


def test_a_predecessors_queue_is_adopted_only_on_request_and_another_pipelines_never() -> None:
    observed = converged_queues()
    assert observed.main is not None
    # Same namespace and name, another uid: an earlier OrderPipeline that retained it; the
    # legacy `<namespace>.<name>` tag of older operator versions counts as the same.
    for left_behind in (
        {aws.OWNER_TAG: "team-a/shop", aws.OWNER_UID_TAG: "0000"},
        {aws.OWNER_TAG: "team-a.shop"},
    ):
        queues = aws.ObservedQueues(
            observed.dlq, dataclasses.replace(observed.main, tags=left_behind)
        )
        refused = decide.decide_queues(SPEC, OWNER, queues)
        assert refused.conflict is not None
        assert "was left by an earlier OrderPipeline" in refused.conflict.message
        adopted = decide.decide_queues(make_spec(adopt=True), OWNER, queues)
        assert adopted.conflict is None
        main = adopted.steps[1]
        assert isinstance(main, decide.UpdateQueue)
        assert main.tags[aws.OWNER_UID_TAG] == "1234"

    for theirs in (THEIRS, {aws.OWNER_TAG: "team-b/shop", aws.OWNER_UID_TAG: "1234"}):
        queues = aws.ObservedQueues(observed.dlq, dataclasses.replace(observed.main, tags=theirs))
        plan = decide.decide_queues(make_spec(adopt=True), OWNER, queues)
        assert plan.steps == ()
        assert plan.conflict is not None
        assert "belongs to OrderPipeline team-b/" in plan.conflict.message


def test_tables_still_creating_wait_and_ttl_is_enabled_only_where_missing_or_wrong() -> None:
    orders, catalog, idempotency, velocity, payments = active_tables()
    observed = (
        orders,
        dataclasses.replace(catalog, status="CREATING"),
        dataclasses.replace(idempotency, ttl_status="DISABLED", ttl_attribute=None),
        dataclasses.replace(velocity, ttl_status="ENABLING"),
        payments,
    )
    assert decide.decide_tables(observed, OWNER, adopt=False) == decide.TablesPlan(
        steps=(decide.EnableTimeToLive("shop-idempotency", attribute="expires_at"),),
        pending=("shop-catalog",),
    )


def test_a_table_that_is_not_ours_is_a_conflict_and_no_table_is_touched() -> None:
    orders, catalog, *rest = active_tables()
    missing = aws.ObservedTable(name=orders.name, exists=False, status=None)
    for foreign, message in (
        (THEIRS, "table shop-catalog belongs to OrderPipeline team-b/other"),
        ({}, "table shop-catalog exists and has no owner tag; set spec.adopt to take it over"),
    ):
        observed = (missing, dataclasses.replace(catalog, tags=foreign), *rest)
        assert decide.decide_tables(observed, OWNER, adopt=False) == decide.TablesPlan(
            steps=(), pending=(), conflict=decide.Conflict(message)
        )


def test_adopting_an_untagged_table_tags_it_as_ours() -> None:
    orders, catalog, *rest = active_tables()
    observed = (orders, dataclasses.replace(catalog, tags={"team": "a"}), *rest)
    assert decide.decide_tables(observed, OWNER, adopt=True) == decide.TablesPlan(
        steps=(decide.TagTable("shop-catalog", arn=str(catalog.arn), tags=OWNER_TAGS),),
        pending=(),
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
    plan = decide.decide_deletion(SPEC, OWNER, None)
    assert plan == decide.DeletionPlan(
        done=True,
        event=decide.Event(
            "Normal",
            "Retained",
            "deletionPolicy Retain: kept queues shop-orders, shop-orders-dlq and tables "
            "shop-orders, shop-catalog, shop-idempotency, shop-velocity, shop-payments",
        ),
    )


DELETE = make_spec(queue={"name": "shop-orders", "deletionPolicy": "Delete", "tags": {"team": "a"}})
QUEUE_URLS = ("http://sqs/shop-orders", "http://sqs/shop-orders-dlq")
TABLE_NAMES = tuple(f"shop-{table}" for table in TABLES)


def deleting(
    *,
    queued: int = 0,
    dead: int = 0,
    pods: int = 0,
    queues: aws.ObservedQueues | None = None,
    tables: tuple[aws.ObservedTable, ...] | None = None,
) -> DeletionSnapshot:
    """What a Delete sees: our queues and tables, `queued` messages in the queue (one of them
    in flight), `dead` in the DLQ, `pods` pods of the pipeline left."""
    return DeletionSnapshot(
        queues=queues or converged_queues(DELETE),
        tables=tables or active_tables(),
        depth=QueueDepth(visible=max(queued - 1, 0), in_flight=min(queued, 1)),
        dlq_depth=QueueDepth(visible=dead, in_flight=0),
        pods=pods,
    )


def test_delete_stops_the_api_and_waits_while_the_processor_drains_the_queue() -> None:
    plan = decide.decide_deletion(DELETE, OWNER, deleting(queued=3, pods=3))
    assert (plan.done, plan.stop_intake, plan.stop_processor) == (False, True, False)
    assert (plan.delete_queues, plan.delete_tables) == ((), ())
    assert plan.blocked is not None
    assert plan.blocked.reason == "QueueNotEmpty"
    assert "3 message(s) still wait in shop-orders" in plan.blocked.message
    assert plan.event == decide.Event("Warning", "DeletionBlocked", plan.blocked.message)


def test_delete_waits_for_every_pod_to_be_gone_after_stopping_both_workloads() -> None:
    plan = decide.decide_deletion(DELETE, OWNER, deleting(pods=2))
    assert (plan.done, plan.stop_intake, plan.stop_processor) == (False, True, True)
    assert (plan.delete_queues, plan.delete_tables) == ((), ())
    assert plan.blocked is not None
    assert plan.blocked.reason == "WorkloadsStopping"
    assert plan.event.type == "Normal"


def test_what_the_dlq_holds_is_reported_and_deleted_not_waited_on() -> None:
    plan = decide.decide_deletion(DELETE, OWNER, deleting(dead=2))
    assert plan == decide.DeletionPlan(
        done=True,
        event=decide.Event(
            "Warning",
            "Deleted",
            "deletionPolicy Delete: removed queues shop-orders, shop-orders-dlq and tables "
            "shop-orders, shop-catalog, shop-idempotency, shop-velocity, shop-payments; "
            "discarded 0 message(s) of shop-orders and 2 of shop-orders-dlq",
        ),
        stop_intake=True,
        stop_processor=True,
        delete_queues=QUEUE_URLS,
        delete_tables=TABLE_NAMES,
    )
    empty = decide.decide_deletion(DELETE, OWNER, deleting())
    assert (empty.done, empty.delete_queues, empty.event.type) == (True, QUEUE_URLS, "Normal")


def test_the_dlq_is_waited_on_only_when_the_spec_asks_and_nothing_waits_on_request() -> None:
    waits_for_dlq = make_spec(
        queue={"name": "shop-orders", "deletionPolicy": "Delete", "deletionWaitsFor": "QueueAndDlq"}
    )
    held = decide.decide_deletion(waits_for_dlq, OWNER, deleting(dead=2, pods=3))
    assert (held.done, held.stop_processor, held.delete_queues) == (False, False, ())
    assert held.blocked is not None
    assert held.blocked.reason == "DlqNotEmpty"

    waits_for_nothing = make_spec(
        queue={"name": "shop-orders", "deletionPolicy": "Delete", "deletionWaitsFor": "Nothing"}
    )
    plan = decide.decide_deletion(waits_for_nothing, OWNER, deleting(queued=5))
    assert (plan.done, plan.delete_queues) == (True, QUEUE_URLS)
    assert "discarded 5 message(s) of shop-orders and 0 of shop-orders-dlq" in plan.event.message


def test_nothing_is_deleted_or_stopped_unless_all_of_it_is_this_very_pipelines() -> None:
    queues = converged_queues(DELETE)
    assert queues.main is not None
    orders, *rest = active_tables()
    for snapshot, why in (
        (
            deleting(
                queues=aws.ObservedQueues(queues.dlq, dataclasses.replace(queues.main, tags=THEIRS))
            ),
            "queue shop-orders belongs to OrderPipeline team-b/other",
        ),
        (
            deleting(tables=(dataclasses.replace(orders, tags={}), *rest)),
            "table shop-orders exists and has no owner tag",
        ),
        (
            # A predecessor's (left by an earlier OrderPipeline of this name): not ours either,
            # even though spec.adopt would take it over.
            deleting(
                tables=(
                    dataclasses.replace(orders, tags={**OWNER_TAGS, aws.OWNER_UID_TAG: "0"}),
                    *rest,
                )
            ),
            "table shop-orders exists and was left by an earlier OrderPipeline",
        ),
    ):
        plan = decide.decide_deletion(DELETE.model_copy(update={"adopt": True}), OWNER, snapshot)
        assert (plan.done, plan.stop_intake, plan.stop_processor) == (True, False, False)
        assert (plan.delete_queues, plan.delete_tables) == ((), ())
        assert (plan.event.type, plan.event.reason) == ("Warning", "NotOwned")
        assert why in plan.event.message


def test_gone_queues_and_tables_are_not_deleted_again() -> None:
    orders, *rest = active_tables()
    gone = deleting(
        queues=aws.ObservedQueues(dlq=converged_queues(DELETE).dlq, main=None),
        tables=(aws.ObservedTable(name=orders.name, exists=False, status=None), *rest),
    )
    plan = decide.decide_deletion(DELETE, OWNER, dataclasses.replace(gone, depth=None))
    assert plan.delete_queues == ("http://sqs/shop-orders-dlq",)
    assert plan.delete_tables == TABLE_NAMES[1:]


def test_a_missing_credentials_secret_ends_the_deletion_with_a_warning_and_keeps_everything() -> (
    None
):
    missing = Failure("CredentialsSecretMissing", "Secret not found: Not Found")
    plan = decide.decide_deletion(DELETE, OWNER, missing)
    assert (plan.done, plan.stop_intake, plan.delete_queues, plan.delete_tables) == (
        True,
        False,
        (),
        (),
    )
    assert (plan.event.type, plan.event.reason) == ("Warning", "CredentialsSecretMissing")
    assert plan.event.message.startswith("deletionPolicy Delete: kept queues shop-orders")

    # An engine that does not answer is looked at again, not given up on.
    unreachable = Failure("EngineUnavailable", "converging queue shop-orders: boom")
    assert decide.decide_deletion(DELETE, OWNER, unreachable).done is False
