"""Canonical queue-attribute comparison: no update loop from strings, key order or numbers."""

from __future__ import annotations

import json

from order_operator import aws
from order_operator.v1alpha1 import spec as v1alpha1

DLQ_ARN = "arn:aws:sqs:us-east-1:000000000000:orders-dlq"


def test_converged_queue_needs_no_change_despite_json_key_order_and_number_strings() -> None:
    queue = v1alpha1.QueueSpec(name="orders")
    desired = aws.queue_attributes(queue, DLQ_ARN)
    actual = {
        **desired,
        "RedrivePolicy": json.dumps({"maxReceiveCount": "3", "deadLetterTargetArn": DLQ_ARN}),
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:orders",
    }
    assert aws.attributes_to_change(desired, actual) == {}


def test_changed_attributes_are_the_only_ones_sent() -> None:
    queue = v1alpha1.QueueSpec(name="orders", visibility_timeout_seconds=90, max_receive_count=5)
    desired = aws.queue_attributes(queue, DLQ_ARN)
    actual = aws.queue_attributes(v1alpha1.QueueSpec(name="orders"), DLQ_ARN)
    assert sorted(aws.attributes_to_change(desired, actual)) == [
        "RedrivePolicy",
        "VisibilityTimeout",
    ]


def test_attribute_the_engine_never_reports_is_not_resent_every_pass() -> None:
    desired = {"MessageRetentionPeriod": "345600", "VisibilityTimeout": "30"}
    assert aws.attributes_to_change(desired, {"VisibilityTimeout": "30"}) == {}


def test_redrive_policy_names_the_dlq_and_max_receive_count() -> None:
    attributes = aws.queue_attributes(v1alpha1.QueueSpec(name="orders"), DLQ_ARN)
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": DLQ_ARN,
        "maxReceiveCount": 3,
    }
