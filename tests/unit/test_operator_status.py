"""The status a reconcile pass reports, from plain data: fields, conditions, Ready and retry."""

from __future__ import annotations

from typing import Any

from order_operator import aws, decide, scaling
from order_operator.act import CloudResult
from order_operator.kube import DeploymentState
from order_operator.observe import Failure, ScalingSnapshot, WorkloadsSnapshot
from order_operator.pipeline_status import Report, Scaled, pipeline_status
from order_operator.v1alpha1 import spec as v1alpha1

NOW = "2026-01-01T00:01:00Z"
EARLIER = "2026-01-01T00:00:00Z"
QUEUES = aws.QueueInfo(
    url="http://sqs/shop-orders",
    arn="arn:aws:sqs:us-east-1:0:shop-orders",
    dlq_url="http://sqs/shop-orders-dlq",
    dlq_arn="arn:aws:sqs:us-east-1:0:shop-orders-dlq",
)
SPEC = v1alpha1.OrderPipelineSpec.model_validate(
    {
        "queue": {"name": "shop-orders", "maxReceiveCount": 4},
        "tables": {"prefix": "shop-"},
        "api": {"image": "api:1", "autoscaling": {"minReplicas": 2}},
        "processor": {"image": "processor:1"},
    }
)
TABLE_NAMES = SPEC.tables.names


def deployment(ready: int, *, observed_current: bool = True) -> DeploymentState:
    return DeploymentState(
        exists=True,
        spec_replicas=ready,
        ready_replicas=ready,
        updated_replicas=ready,
        observed_current=observed_current,
    )


def scaled(*, replicas: int = 1, scale_to: int | None = None, visible: int = 40) -> Scaled:
    decision = scaling.Decision(
        desired=replicas, replicas=replicas, reason="ScaleUp" if scale_to else "Steady"
    )
    return Scaled(
        snapshot=ScalingSnapshot(
            depth=scaling.QueueDepth(visible=visible, in_flight=2, delayed=5),
            dlq_depth=scaling.QueueDepth(visible=1, in_flight=1),
            processor=deployment(1),
            now=0.0,
        ),
        plan=decide.ScalePlan(
            backlog=visible + 2,
            decision=decision,
            history=(),
            scale_to=scale_to,
            event=None,
        ),
    )


STEADY = scaled()


def report(
    *,
    queues: aws.QueueInfo | Failure = QUEUES,
    tables: tuple[str, ...] | Failure | None = (),
    scaling_step: Scaled | Failure | None = STEADY,
    api_ready: int = 2,
    processor: DeploymentState | None = None,
    old_status: dict[str, Any] | None = None,
) -> Report:
    return pipeline_status(
        spec=SPEC,
        generation=3,
        old_status=old_status or {},
        cloud=CloudResult(queues=queues, tables=tables),
        scaled=scaling_step,
        workloads=WorkloadsSnapshot(
            api=deployment(api_ready), processor=processor or deployment(1)
        ),
        now=NOW,
    )


def conditions_of(result: Report) -> dict[str, tuple[str, str, str]]:
    return {
        entry["type"]: (entry["status"], entry["reason"], entry["message"])
        for entry in result.status["conditions"]
    }


def test_converged_pipeline_is_ready_and_reports_every_field() -> None:
    result = report()

    assert result.ready is True
    assert result.retry_after is None
    assert result.status == {
        "queue": {
            "url": QUEUES.url,
            "arn": QUEUES.arn,
            "dlqUrl": QUEUES.dlq_url,
            "dlqArn": QUEUES.dlq_arn,
            "backlog": 42,
            "visible": 40,
            "inFlight": 2,
            "dlqDepth": 2,
        },
        "processor": {"desiredReplicas": 1, "currentReplicas": 1, "readyReplicas": 1},
        "tables": TABLE_NAMES,
        "api": {"readyReplicas": 2},
        "conditions": result.status["conditions"],
        "observedGeneration": 3,
    }
    assert conditions_of(result) == {
        "QueuesReady": (
            "True",
            "Converged",
            "shop-orders redrives to shop-orders-dlq after 4 receives",
        ),
        "TablesReady": ("True", "Active", "5 tables"),
        "ScalingReady": ("True", "Steady", "backlog 42: desired 1, running 1 (Steady)"),
        "WorkloadsAvailable": ("True", "Available", "api 2/2 ready, processor 1/1"),
        "Ready": ("True", "AllComponentsReady", "queues, tables and workloads are ready"),
    }
    for entry in result.status["conditions"]:
        assert (entry["observedGeneration"], entry["lastTransitionTime"]) == (3, NOW)


def test_tables_being_created_and_workloads_rolling_out_ask_for_a_quick_look_again() -> None:
    result = report(tables=("shop-orders",), api_ready=1)
    assert result.ready is False
    assert conditions_of(result)["TablesReady"] == (
        "False",
        "Creating",
        "waiting for ['shop-orders']",
    )
    assert conditions_of(result)["WorkloadsAvailable"][:2] == ("False", "Progressing")
    assert result.retry_after == 2.0


def test_a_rollout_not_yet_observed_counts_no_ready_replicas() -> None:
    result = report(api_ready=2, processor=deployment(1, observed_current=False))
    assert conditions_of(result)["WorkloadsAvailable"] == (
        "False",
        "Progressing",
        "api 2/2 ready, processor 0/1",
    )


def test_missing_credentials_secret_reports_why_and_retries_later() -> None:
    result = report(
        queues=Failure("CredentialsSecretMissing", "Not Found"),
        tables=None,
        scaling_step=None,  # no queue, no scaling step
        old_status={"processor": {"currentReplicas": 3, "desiredReplicas": 3}},
        processor=deployment(3),
    )
    found = conditions_of(result)
    assert found["QueuesReady"] == ("False", "CredentialsSecretMissing", "Not Found")
    assert found["TablesReady"] == ("Unknown", "NoCredentials", "see queues")
    assert found["ScalingReady"] == ("False", "NoQueue", "queues not ready")
    assert found["Ready"] == ("False", "CredentialsSecretMissing", "QueuesReady: Not Found")
    assert result.retry_after == 10.0
    # Without a scaling step the last counts stand, and the workloads are measured against them.
    assert result.status["processor"] == {
        "currentReplicas": 3,
        "desiredReplicas": 3,
        "readyReplicas": 3,
    }
    assert found["WorkloadsAvailable"][0] == "True"
    assert result.status["queue"] == {}
    assert "tables" not in result.status


def test_name_conflict_is_not_ready_with_the_owner_in_the_message_and_no_quick_retry() -> None:
    message = "queue shop-orders belongs to OrderPipeline team-b.other"
    result = report(queues=Failure("NameConflict", message), scaling_step=None)
    assert conditions_of(result)["Ready"] == ("False", "NameConflict", f"QueuesReady: {message}")
    assert result.status["queue"] == {}
    assert result.retry_after is None


def test_unreachable_engine_for_tables_retries_later() -> None:
    result = report(tables=Failure("EngineUnavailable", "converging tables: timeout"))
    assert conditions_of(result)["TablesReady"] == (
        "False",
        "EngineUnavailable",
        "converging tables: timeout",
    )
    assert result.retry_after == 10.0


def test_unreadable_queue_depth_keeps_the_queue_fields_but_no_depth() -> None:
    result = report(scaling_step=Failure("QueueDepthUnavailable", "reading queue depth: x"))
    assert conditions_of(result)["ScalingReady"] == (
        "False",
        "QueueDepthUnavailable",
        "reading queue depth: x",
    )
    assert "backlog" not in result.status["queue"]
    assert result.status["queue"]["url"] == QUEUES.url


def test_scale_time_is_set_when_scaling_and_kept_otherwise() -> None:
    old = {"processor": {"currentReplicas": 1, "lastScaleTime": EARLIER}}
    up = report(scaling_step=scaled(replicas=10, scale_to=10), old_status=old)
    assert up.status["processor"]["lastScaleTime"] == NOW
    assert up.status["processor"]["currentReplicas"] == 10
    # Ten wanted, one ready: still progressing.
    assert conditions_of(up)["WorkloadsAvailable"][:2] == ("False", "Progressing")

    steady = report(old_status=old)
    assert steady.status["processor"]["lastScaleTime"] == EARLIER


def test_deletion_blocked_is_dropped_and_unchanged_conditions_keep_their_transition_time() -> None:
    first = report()
    old = {
        "conditions": [
            *first.status["conditions"],
            {"type": "DeletionBlocked", "status": "True", "reason": "QueueNotEmpty"},
        ]
    }
    again = pipeline_status(
        spec=SPEC,
        generation=4,
        old_status=old,
        cloud=CloudResult(queues=QUEUES, tables=()),
        scaled=scaled(),
        workloads=WorkloadsSnapshot(api=deployment(2), processor=deployment(1)),
        now="2026-01-01T00:09:00Z",
    )
    types = [entry["type"] for entry in again.status["conditions"]]
    assert "DeletionBlocked" not in types
    for entry in again.status["conditions"]:
        assert (entry["observedGeneration"], entry["lastTransitionTime"]) == (4, NOW)
