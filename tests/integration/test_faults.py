"""The order path under faults injected on the real engines' traffic.

Each test puts a `FaultProxy` between one service and one engine and injects the fault a real
network or a real AWS gives now and then; the promise holds each time: one order per
Idempotency-Key, every order in exactly one final state, charged at most once (and refunded
when it ends FAILED after its charge), stock taken once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest

from order_api import security
from order_common import contract
from order_devtools import local
from tests import faultproxy
from tests.faultproxy import Fault, FaultKind
from tests.integration import helpers
from tests.integration.conftest import (
    ApiClients,
    PipelineWithApi,
    ServiceFactory,
)

pytestmark = pytest.mark.integration

Clients = Callable[[local.ServiceProcess], httpx.Client]
COMPLETED = '"COMPLETED"'  # in a request body: a write of that status


@pytest.fixture
def sqs_proxy(pipeline: local.LocalPipeline) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.proxied(pipeline.sqs_endpoint) as proxy:
        yield proxy


@pytest.fixture
def dynamodb_proxy(pipeline: local.LocalPipeline) -> Iterator[faultproxy.FaultProxy]:
    with faultproxy.proxied(pipeline.dynamodb_endpoint) as proxy:
        yield proxy


@pytest.fixture
def client_via_sqs_proxy(
    pipeline: local.LocalPipeline,
    sqs_proxy: faultproxy.FaultProxy,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> httpx.Client:
    """A client of an API that reaches SQS through `sqs_proxy`; the processor goes direct."""
    api = start_api(dataclasses.replace(pipeline, sqs_endpoint=sqs_proxy.endpoint))
    start_processor(pipeline)
    return api_client(api)


def _orders_of_customer_once_drained(pipeline: local.LocalPipeline, customer_id: str) -> list[str]:
    """The customer's order ids, once every message of the queue has been processed."""
    helpers.eventually(
        lambda: helpers.queue_depths(pipeline)[pipeline.queue_name], until=lambda n: n == 0
    )
    return [o for o, r in _orders(pipeline).items() if r["customer_id"] == customer_id]


def _orders(pipeline: local.LocalPipeline) -> dict[str, dict[str, Any]]:
    """order id -> its record (status, customer), read straight from the table."""
    dynamodb = boto3.client("dynamodb", endpoint_url=pipeline.dynamodb_endpoint)
    found: dict[str, dict[str, Any]] = {}
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=f"{pipeline.table_prefix}orders", ConsistentRead=True
    ):
        for item in page["Items"]:
            found[item["order_id"]["S"]] = {
                "status": item["status"]["S"],
                "customer_id": item.get("customer_id", {}).get("S"),
                "reason": item.get("reason", {}).get("S"),
            }
    return found


def _ledger(pipeline: local.LocalPipeline) -> dict[str, dict[str, Any]]:
    dynamodb = boto3.client("dynamodb", endpoint_url=pipeline.dynamodb_endpoint)
    items = dynamodb.scan(TableName=f"{pipeline.table_prefix}payments", ConsistentRead=True)
    return {i["order_id"]["S"]: i for i in items["Items"]}


def _send_raw(pipeline: local.LocalPipeline, queue_name: str, *bodies: str) -> None:
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
    )


def _message(order_id: str, *, customer_id: str = "cust-raw", sku: str = "SKU-MUG") -> str:
    return contract.encode_message(
        contract.OrderMessage(
            order_id=order_id,
            client_id="demo",
            customer_id=customer_id,
            items=(contract.OrderItem(sku=sku, quantity=1),),
            currency="USD",
            payment_token="tok_ok",
            accepted_at=time.time(),
        )
    )


def _order_poster(
    client: httpx.Client, *, idempotency_key: str, customer_id: str
) -> Callable[[], httpx.Response]:
    """Posts the same order (one mug) with the same Idempotency-Key each call: a client retrying."""
    headers = {**helpers.auth(helpers.token(client)), "Idempotency-Key": idempotency_key}
    body = helpers.order_body(customer_id=customer_id, SKU_MUG=1)
    return lambda: client.post("/v1/orders", json=body, headers=headers)


def _every_send_answer_lost(
    sqs_proxy: faultproxy.FaultProxy,
) -> contextlib.AbstractContextManager[None]:
    """SQS stores each batch; the answer never reaches the sender."""
    return sqs_proxy.faults(Fault(FaultKind.DROP_RESPONSE, "SendMessageBatch", times=None))


def test_a_send_whose_answer_is_lost_never_becomes_a_second_order_on_retry(
    pipeline: local.LocalPipeline,
    sqs_proxy: faultproxy.FaultProxy,
    client_via_sqs_proxy: httpx.Client,
) -> None:
    client = client_via_sqs_proxy
    post = _order_poster(client, idempotency_key="lost-answer-1", customer_id="cust-lost")

    # SQS stores the batch every time, and the API never hears back (all its attempts).
    with _every_send_answer_lost(sqs_proxy):
        uncertain = post()
    retried = post()

    assert uncertain.status_code == 503, uncertain.text
    problem = uncertain.json()
    assert "may have been accepted" in problem["detail"]
    assert retried.status_code == 202, retried.text
    assert retried.json()["order_id"] == problem["order_id"]
    final = helpers.wait_final(client, retried.json()["status_url"])
    assert final["status"] == "COMPLETED"
    mine = _orders_of_customer_once_drained(pipeline, "cust-lost")
    assert mine == [problem["order_id"]]
    assert list(helpers.charges(pipeline)) == mine


def test_a_refused_retry_after_an_uncertain_send_keeps_the_key_and_its_order(
    pipeline: local.LocalPipeline,
    sqs_proxy: faultproxy.FaultProxy,
    client_via_sqs_proxy: httpx.Client,
) -> None:
    client = client_via_sqs_proxy
    post = _order_poster(
        client, idempotency_key="lost-then-refused", customer_id="cust-lost-refused"
    )

    with _every_send_answer_lost(sqs_proxy):
        uncertain = post()
    # The retry is refused outright (throttled on every attempt): that says nothing about the
    # first attempt, whose order may be queued.
    with sqs_proxy.faults(Fault(FaultKind.THROTTLE, "SendMessageBatch", times=None)):
        refused = post()
    accepted = post()

    assert uncertain.status_code == refused.status_code == 503
    assert refused.json()["order_id"] == uncertain.json()["order_id"]
    assert "may have been accepted" in refused.json()["detail"]
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["order_id"] == uncertain.json()["order_id"]
    helpers.wait_final(client, accepted.json()["status_url"])
    mine = _orders_of_customer_once_drained(pipeline, "cust-lost-refused")
    assert mine == [uncertain.json()["order_id"]]


def test_a_failed_idempotency_record_after_the_send_still_answers_202(
    pipeline: local.LocalPipeline,
    dynamodb_proxy: faultproxy.FaultProxy,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> None:
    api = start_api(dataclasses.replace(pipeline, dynamodb_endpoint=dynamodb_proxy.endpoint))
    start_processor(pipeline)
    client = api_client(api)
    headers = {**helpers.auth(helpers.token(client)), "Idempotency-Key": "record-fails-1"}

    # The idempotency record's writes only (the rate limit's window is written too).
    record_fails = Fault(
        FaultKind.SERVER_ERROR, "UpdateItem", times=None, body_contains="record-fails-1"
    )
    with dynamodb_proxy.faults(record_fails):
        accepted = client.post("/v1/orders", json=helpers.order_body(), headers=headers)

    assert accepted.status_code == 202, accepted.text
    final = helpers.wait_final(client, accepted.json()["status_url"])
    assert final["status"] == "COMPLETED"


def test_a_transaction_cancelled_for_throttling_is_retried_not_taken_as_final(
    pipeline: local.LocalPipeline,
    dynamodb_proxy: faultproxy.FaultProxy,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    client = start_api_client(pipeline)
    start_processor(dataclasses.replace(pipeline, dynamodb_endpoint=dynamodb_proxy.endpoint))
    dynamodb_proxy.inject(
        Fault(
            FaultKind.CANCEL_TRANSACTION,
            "TransactWriteItems",
            body_contains=COMPLETED,
            reasons=("ThrottlingError",),
        )
    )

    accepted = helpers.place_order(
        client,
    )

    assert helpers.wait_final(client, accepted["status_url"], timeout=20)["status"] == "COMPLETED"
    assert dynamodb_proxy.stats.faulted == {"cancel_transaction": 1}


def test_two_copies_of_an_order_in_one_batch_leave_the_rest_of_the_batch_alone(
    pipeline: local.LocalPipeline, start_processor: ServiceFactory
) -> None:
    before = helpers.stock(pipeline, "SKU-MUG")
    twice = f"ord_twice_{uuid.uuid4().hex[:8]}"
    others = [f"ord_other_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    bodies = [_message(twice), _message(twice)] + [
        _message(o, customer_id=f"cust-{o}") for o in others
    ]
    _send_raw(pipeline, pipeline.queue_name, *bodies)

    start_processor(pipeline)

    orders = helpers.eventually(
        lambda: _orders(pipeline),
        until=lambda found: all(
            found.get(o, {}).get("status") == "COMPLETED" for o in [twice, *others]
        ),
    )
    assert len(orders) == 4
    assert sorted(helpers.charges(pipeline)) == sorted([twice, *others])
    assert helpers.stock(pipeline, "SKU-MUG") == before - 4


def test_a_charged_order_whose_completion_failed_completes_whatever_its_customer_did_since(
    pipeline_with_api: PipelineWithApi,
    start_processor: ServiceFactory,
) -> None:
    # Room for the later orders to finish.
    pipeline, client = pipeline_with_api(visibility_timeout=10)
    access_token = helpers.token(client)
    body = helpers.order_body(customer_id="cust-busy")
    first = helpers.place(client, access_token, body)
    with faultproxy.proxied(pipeline.dynamodb_endpoint) as proxy:
        # Its first COMPLETED write fails on all its attempts: the order is paid, not recorded.
        proxy.inject(
            Fault(
                FaultKind.SERVER_ERROR,
                "TransactWriteItems",
                body_contains=(COMPLETED, first["order_id"]),
                times=3,
            )
        )
        start_processor(
            dataclasses.replace(pipeline, dynamodb_endpoint=proxy.endpoint), VELOCITY_LIMIT="1"
        )
        helpers.eventually(lambda: proxy.stats.faulted.get("server_error", 0), until=lambda n: n)
        # Before its redelivery, the customer orders four more times (all processed before it
        # comes back): the velocity rule would now reject the first order, were it judged again.
        later = [helpers.place(client, access_token, body) for _ in range(4)]
        for order in later:
            helpers.wait_final(client, order["status_url"], timeout=5)
        assert client.get(first["status_url"]).json()["status"] == "PROCESSING"

        final = helpers.wait_final(client, first["status_url"], timeout=30)

    assert final["status"] == "COMPLETED", final
    ledger = _ledger(pipeline)
    assert first["order_id"] in ledger
    assert "refunded_at" not in ledger[first["order_id"]]


def test_an_order_that_ends_failed_after_its_charge_is_refunded_once(
    pipeline_with_api: PipelineWithApi,
    start_processor: ServiceFactory,
) -> None:
    pipeline, client = pipeline_with_api(visibility_timeout=1, max_receive_count=2)
    before = helpers.stock(pipeline, "SKU-MUG")
    with faultproxy.proxied(pipeline.dynamodb_endpoint) as proxy:
        proxy.inject(
            Fault(
                FaultKind.SERVER_ERROR,
                "TransactWriteItems",
                body_contains=COMPLETED,
                times=None,
            )
        )
        start_processor(dataclasses.replace(pipeline, dynamodb_endpoint=proxy.endpoint))
        accepted = helpers.place_order(client, SKU_MUG=2)
        final = helpers.wait_final(client, accepted["status_url"], timeout=30)

    assert final["status"] == "FAILED", final
    entry = _ledger(pipeline)[accepted["order_id"]]
    assert "refunded_at" in entry
    assert helpers.stock(pipeline, "SKU-MUG") == before


def test_an_order_found_in_the_dlq_ends_failed_with_a_reason(
    pipeline: local.LocalPipeline, start_processor: ServiceFactory
) -> None:
    # As after a crash on the last receive: redrive moved it, nobody recorded it.
    order_id = f"ord_dlq_{uuid.uuid4().hex[:8]}"
    _send_raw(pipeline, f"{pipeline.queue_name}-dlq", _message(order_id))

    start_processor(pipeline)

    record = helpers.eventually(
        lambda: _orders(pipeline).get(order_id), until=lambda r: r is not None
    )
    assert record is not None
    assert record["status"] == "FAILED"
    assert "dead-letter queue" in (record["reason"] or "")
    assert helpers.queue_depths(pipeline)[f"{pipeline.queue_name}-dlq"] == 1  # kept for people


def test_a_visibility_extension_refused_for_its_entry_is_tried_again_before_the_message_returns(
    pipeline_with_api: PipelineWithApi,
    sqs_proxy: faultproxy.FaultProxy,
    start_processor: ServiceFactory,
) -> None:
    # The simulated gateway takes 4 s for tok_slow; the message would reappear after 3 s.
    pipeline, client = pipeline_with_api(visibility_timeout=3, max_receive_count=5)
    accepted = helpers.place_order(client, token="tok_slow")
    processor = start_processor(dataclasses.replace(pipeline, sqs_endpoint=sqs_proxy.endpoint))

    # The calls succeed; SQS reports the entry as failed twice: its visibility was not
    # extended. Tried again at once each time, it still is before the 3 s run out.
    with sqs_proxy.faults(Fault(FaultKind.FAIL_ENTRIES, "ChangeMessageVisibilityBatch", times=2)):
        final = helpers.wait_final(client, accepted["status_url"])

    assert final["status"] == "COMPLETED"
    assert sqs_proxy.stats.faulted == {"fail_entries": 2}
    assert helpers.metric(processor, "visibility_extension_failures_total") == 2
    # Received once: the failed entry was extended in time, the message never came back.
    assert helpers.metric(processor, "queue_receive_batch_size_sum") == 1


def test_without_a_redrive_policy_a_failing_order_ends_failed_instead_of_looping(
    pipeline: local.LocalPipeline,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    bare = dataclasses.replace(pipeline, queue_name=f"{pipeline.queue_name}-bare")
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    sqs.create_queue(QueueName=bare.queue_name, Attributes={"VisibilityTimeout": "1"})
    client = start_api_client(bare)
    start_processor(bare, RECEIVES_WITHOUT_REDRIVE="2")

    accepted = helpers.place_order(client, token="tok_unavailable")

    final = helpers.wait_final(client, accepted["status_url"], timeout=30)
    assert final["status"] == "FAILED"
    assert "2 times" in final["reason"]
    url = sqs.get_queue_url(QueueName=bare.queue_name)["QueueUrl"]
    helpers.eventually(
        lambda: sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"],
        until=lambda a: (
            a["ApproximateNumberOfMessages"] == "0"
            and a["ApproximateNumberOfMessagesNotVisible"] == "0"
        ),
    )


def test_a_status_read_past_the_queues_retention_with_no_record_says_it_never_will_be(
    pipeline: local.LocalPipeline, start_api_client: ApiClients
) -> None:
    # An order accepted eight days ago (its status URL is valid for seven more) that no
    # processor ever recorded: the queue (four days' retention) no longer holds it.
    client = start_api_client(pipeline, STATUS_URL_TTL_SECONDS=str(15 * 86400))
    signer = security.Signer(keys={"1": pipeline.signing_secret.encode()}, current_kid="1")
    order_id = signer.new_order_id("demo")
    expires = int(time.time()) + 7 * 86400
    signature = signer.sign_status(order_id, expires)
    url = f"/v1/orders/{order_id}?expires={expires}&kid=1&sig={signature}"

    answer = client.get(url)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "FAILED"
    assert "place the order again" in answer.json()["reason"]
    fresh_id = signer.new_order_id("demo")
    fresh_expires = int(time.time()) + 15 * 86400
    fresh = client.get(
        f"/v1/orders/{fresh_id}?expires={fresh_expires}"
        f"&sig={signer.sign_status(fresh_id, fresh_expires)}"
    )
    assert fresh.json()["status"] == "QUEUED"
