"""Crashes, outages, poison messages and races: nothing accepted is lost or applied twice."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from order_devtools import engines, local, provision
from tests.integration import helpers
from tests.integration.conftest import (
    ApiClients,
    PipelineFactory,
    PipelineWithApi,
    ServiceFactory,
)

pytestmark = pytest.mark.integration

Clients = Callable[[local.ServiceProcess], httpx.Client]


def test_processor_killed_mid_batch_applies_every_order_exactly_once(
    make_pipeline: PipelineFactory,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> None:
    # Enough stock for some orders only, so completions and rejections race each other.
    catalog = {"SKU-A": ("A", 100, 150), "SKU-B": ("B", 250, 90)}
    pipeline = make_pipeline(catalog=catalog, visibility_timeout=2, max_receive_count=10)
    api = start_api(pipeline, RATE_LIMIT_PER_MINUTE="100000")
    client = api_client(api)
    access_token = helpers.token(client)
    placed = [
        helpers.place(
            client,
            access_token,
            helpers.order_body(customer_id=f"c{i}", SKU_A=1 + i % 3, SKU_B=1 + i % 2),
        )
        for i in range(200)
    ]
    processor = start_processor(pipeline, CONCURRENCY="40")
    helpers.eventually(
        lambda: helpers.metric(processor, "orders_processed_total"),
        until=lambda n: n >= 30,
        timeout=60,
    )
    processor.kill()  # SIGKILL in the middle of the run: batches half done
    start_processor(pipeline, CONCURRENCY="40")
    finals = {
        p["order_id"]: helpers.wait_final(client, p["status_url"], timeout=120) for p in placed
    }

    statuses = {f["status"] for f in finals.values()}
    assert statuses <= {"COMPLETED", "REJECTED"}, statuses
    completed = {oid: f for oid, f in finals.items() if f["status"] == "COMPLETED"}
    assert completed, "some orders must complete"
    # stock: taken exactly once for each completed order, never for a rejected one
    for sku, (_, _, initial) in catalog.items():
        taken = sum(
            i["quantity"] for f in completed.values() for i in f["items"] if i["sku"] == sku
        )
        assert helpers.stock(pipeline, sku) == initial - taken >= 0
    # charges: exactly one per completed order, for its total, and none for the rest
    assert helpers.charges(pipeline) == {oid: f["total_cents"] for oid, f in completed.items()}
    helpers.eventually(
        lambda: helpers.queue_depths(pipeline),
        until=lambda d: sum(d.values()) == 0,
        timeout=30,
    )


def test_sigterm_finishes_in_flight_work_and_exits_zero(
    make_pipeline: PipelineFactory,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    pipeline = make_pipeline()
    client = start_api_client(pipeline, RATE_LIMIT_PER_MINUTE="100000")
    access_token = helpers.token(client)
    placed = [
        helpers.place(client, access_token, helpers.order_body(customer_id=f"s{i}", SKU_STICKER=1))
        for i in range(60)
    ]
    processor = start_processor(pipeline)
    helpers.eventually(
        lambda: helpers.metric(processor, "orders_processed_total"),
        until=lambda n: n >= 5,
        timeout=60,
    )
    assert processor.stop(timeout=30) == 0
    assert "stopped:" in processor.log_tail(5)
    # Whatever it did not finish it released: a new processor completes everything.
    start_processor(pipeline)
    finals = [helpers.wait_final(client, p["status_url"]) for p in placed]
    assert {f["status"] for f in finals} == {"COMPLETED"}


def test_unparseable_message_goes_to_the_dlq_at_once(
    pipeline: local.LocalPipeline, start_processor: ServiceFactory
) -> None:
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    url = sqs.get_queue_url(QueueName=pipeline.queue_name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"schema_version": 1, "order_id": ')
    processor = start_processor(pipeline)
    dlq = f"{pipeline.queue_name}-dlq"
    helpers.eventually(
        lambda: helpers.queue_depths(pipeline), until=lambda d: d[dlq] == 1, timeout=30
    )
    assert helpers.queue_depths(pipeline) == {pipeline.queue_name: 0, dlq: 1}
    assert helpers.metric(processor, "messages_dead_lettered_total") == 1
    assert helpers.metric(processor, "messages_retried_total") == 0


def test_poison_message_reaches_the_dlq_after_exactly_max_receive_count_receives(
    pipeline_with_api: PipelineWithApi,
    start_processor: ServiceFactory,
) -> None:
    pipeline, client = pipeline_with_api(visibility_timeout=1, max_receive_count=3)
    accepted = helpers.place_order(client, token="tok_unavailable")
    processor = start_processor(pipeline)
    dlq = f"{pipeline.queue_name}-dlq"
    helpers.eventually(
        lambda: helpers.queue_depths(pipeline), until=lambda d: d[dlq] == 1, timeout=60
    )
    time.sleep(2)  # longer than the visibility timeout: no further receive may happen
    assert helpers.metric(processor, "messages_retried_total") == 3
    final = helpers.wait_final(client, accepted["status_url"])
    assert final["status"] == "FAILED"
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    dlq_url = sqs.get_queue_url(QueueName=dlq)["QueueUrl"]
    moved = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)["Messages"]
    assert json.loads(moved[0]["Body"])["order_id"] == accepted["order_id"]


def test_cancel_before_processing_wins_and_processing_skips_the_order(
    pipeline: local.LocalPipeline,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    client = start_api_client(pipeline)
    access_token = helpers.token(client)
    before = helpers.stock(pipeline, "SKU-MUG")
    accepted = helpers.place(client, access_token, helpers.order_body(SKU_MUG=4))
    path = f"/v1/orders/{accepted['order_id']}"
    cancelled = client.delete(path, headers=helpers.auth(access_token))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    assert client.delete(path, headers=helpers.auth(access_token)).status_code == 200  # idempotent
    completed = helpers.place(client, access_token, helpers.order_body(SKU_MUG=1))
    start_processor(pipeline)
    assert helpers.wait_final(client, completed["status_url"])["status"] == "COMPLETED"
    assert helpers.wait_final(client, accepted["status_url"])["status"] == "CANCELLED"
    assert helpers.stock(pipeline, "SKU-MUG") == before - 1
    late = client.delete(f"/v1/orders/{completed['order_id']}", headers=helpers.auth(access_token))
    assert late.status_code == 409
    assert "COMPLETED" in late.json()["detail"]


def test_cancellation_racing_the_processor_has_one_winner_per_order(
    pipeline: local.LocalPipeline,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    client = start_api_client(pipeline, RATE_LIMIT_PER_MINUTE="100000")
    access_token = helpers.token(client)
    start_processor(pipeline)
    before = helpers.stock(pipeline, "SKU-STICKER")
    placed = [
        helpers.place(client, access_token, helpers.order_body(customer_id=f"r{i}", SKU_STICKER=1))
        for i in range(60)
    ]

    def cancel(order_id: str) -> int:
        path = f"/v1/orders/{order_id}"
        return client.delete(path, headers=helpers.auth(access_token)).status_code

    order_ids = [p["order_id"] for p in placed]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = dict(zip(order_ids, pool.map(cancel, order_ids), strict=True))
    finals = {p["order_id"]: helpers.wait_final(client, p["status_url"])["status"] for p in placed}
    for order_id, answer in answers.items():
        assert answer in (200, 409)
        assert (answer == 200) == (finals[order_id] == "CANCELLED"), (answer, finals[order_id])
    completed = sum(status == "COMPLETED" for status in finals.values())
    assert set(finals.values()) <= {"COMPLETED", "CANCELLED"}
    assert helpers.stock(pipeline, "SKU-STICKER") == before - completed
    assert len(helpers.charges(pipeline)) == completed


@pytest.fixture
def own_engines(tmp_path: Path) -> Iterator[engines.Engines]:
    """Engines this test may stop and restart without disturbing the others."""
    with engines.running_engines(tmp_path / "engines", persistent=True) as running:
        yield running


def test_engines_down_under_the_api_give_503_then_recover_losing_nothing(
    own_engines: engines.Engines,
    start_processor: ServiceFactory,
    start_api_client: ApiClients,
) -> None:
    pipeline = local.LocalPipeline(
        sqs_endpoint=own_engines.sqs_endpoint,
        dynamodb_endpoint=own_engines.dynamodb_endpoint,
        queue_name="orders-outage",
        table_prefix="outage-",
    )
    provision.provision(pipeline.aws_settings())
    client = start_api_client(pipeline, RATE_LIMIT_PER_MINUTE="100000")
    access_token = helpers.token(client)
    accepted = [
        helpers.place(client, access_token, helpers.order_body(customer_id=f"o{i}"))
        for i in range(20)
    ]

    own_engines.stop()
    refused = client.post(
        "/v1/orders", json=helpers.order_body(), headers=helpers.auth(access_token)
    )
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert "nothing was accepted" in refused.json()["detail"]
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    checks = not_ready.json()["checks"]
    assert set(checks) == {"queue", "table"}
    assert "ok" not in checks.values()
    status = client.get(accepted[0]["status_url"])
    assert status.status_code == 503

    own_engines.start()
    helpers.eventually(lambda: client.get("/readyz").status_code, until=lambda c: c == 200)
    accepted.append(helpers.place(client, access_token, helpers.order_body(customer_id="after")))
    start_processor(pipeline)
    finals = [helpers.wait_final(client, a["status_url"]) for a in accepted]
    assert [f["status"] for f in finals] == ["COMPLETED"] * 21


def test_slow_work_keeps_its_message_by_extending_visibility(
    pipeline_with_api: PipelineWithApi,
    start_processor: ServiceFactory,
) -> None:
    # The simulated gateway takes 4 s for tok_slow; the queue's visibility timeout is 2 s.
    pipeline, client = pipeline_with_api(visibility_timeout=2, max_receive_count=2)
    accepted = helpers.place_order(client, token="tok_slow")
    processor = start_processor(pipeline)
    final = helpers.wait_final(client, accepted["status_url"])
    assert final["status"] == "COMPLETED"
    assert helpers.metric(processor, "orders_processed_total") == 1
    assert helpers.metric(processor, "messages_retried_total") == 0
    assert (
        helpers.metric(processor, "queue_receive_batch_size_sum") == 1
    )  # received once, never again
    assert helpers.queue_depths(pipeline) == {
        pipeline.queue_name: 0,
        f"{pipeline.queue_name}-dlq": 0,
    }
