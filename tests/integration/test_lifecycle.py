"""Orders through the real API, queue, processor and tables to each final status."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
import pytest

from order_devtools import local
from tests.integration import helpers
from tests.integration.conftest import PipelineFactory, ServiceFactory

pytestmark = pytest.mark.integration

Clients = Callable[[local.ServiceProcess], httpx.Client]


@pytest.fixture
def running(
    pipeline: local.LocalPipeline,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> tuple[local.LocalPipeline, httpx.Client, str]:
    api = start_api(pipeline)
    start_processor(pipeline)
    client = api_client(api)
    return pipeline, client, helpers.token(client)


def test_completed_order_is_priced_charged_once_and_takes_stock(
    running: tuple[local.LocalPipeline, httpx.Client, str],
) -> None:
    pipeline, client, access_token = running
    before = helpers.stock(pipeline, "SKU-MUG")
    accepted = helpers.place(client, access_token, helpers.order_body(SKU_MUG=2, SKU_TSHIRT=1))
    assert accepted["status"] == "QUEUED"
    final = helpers.wait_final(client, accepted["status_url"])
    assert final["status"] == "COMPLETED", final
    assert final["total_cents"] == 2 * 1299 + 1999
    assert {i["sku"]: i["line_total_cents"] for i in final["items"]} == {
        "SKU-MUG": 2598,
        "SKU-TSHIRT": 1999,
    }
    assert final["finished_at"] is not None
    assert helpers.stock(pipeline, "SKU-MUG") == before - 2
    assert helpers.charges(pipeline) == {accepted["order_id"]: 2 * 1299 + 1999}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (helpers.order_body(SKU_POSTER=51), "insufficient stock for sku SKU-POSTER"),
        (helpers.order_body(SKU_NOPE=1), "unknown sku: SKU-NOPE"),
        (helpers.order_body(customer_id="blocked-7", SKU_MUG=3), "fraud score"),
        (helpers.order_body(token="tok_decline_card", SKU_MUG=3), "declined"),
    ],
    ids=["out-of-stock", "unknown-sku", "fraud", "payment-declined"],
)
def test_rejected_orders_say_why_and_leave_stock_and_charges_untouched(
    running: tuple[local.LocalPipeline, httpx.Client, str], body: dict[str, object], reason: str
) -> None:
    pipeline, client, access_token = running
    before = {sku: helpers.stock(pipeline, sku) for sku in ("SKU-MUG", "SKU-POSTER")}
    accepted = helpers.place(client, access_token, body)
    final = helpers.wait_final(client, accepted["status_url"])
    assert final["status"] == "REJECTED"
    assert reason in final["reason"]
    assert {sku: helpers.stock(pipeline, sku) for sku in before} == before
    assert helpers.charges(pipeline) == {}


def test_velocity_rule_rejects_a_burst_from_one_customer(
    running: tuple[local.LocalPipeline, httpx.Client, str],
) -> None:
    _, client, access_token = running
    placed = [
        helpers.place(client, access_token, helpers.order_body(customer_id="burst", SKU_STICKER=1))
        for _ in range(9)
    ]
    finals = [helpers.wait_final(client, p["status_url"]) for p in placed]
    statuses = [f["status"] for f in finals]
    # The default limit is 5 orders a minute; the 7th and later score 50+ and then 70+.
    assert statuses.count("COMPLETED") >= 5
    assert "REJECTED" in statuses, finals
    assert all("orders in 60 s" in f["reason"] for f in finals if f["status"] == "REJECTED")


def test_velocity_is_counted_per_client_so_one_cannot_get_anothers_customer_rejected(
    make_pipeline: PipelineFactory,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> None:
    # Customer ids are each client's own: "shared" at one client is nobody at another.
    pipeline = dataclasses.replace(
        make_pipeline(), clients={"demo": "demo-secret", "other": "other-secret"}
    )
    client = api_client(start_api(pipeline))
    # More than 2 orders a minute by one customer scores 40 or more: rejected.
    start_processor(pipeline, VELOCITY_LIMIT="2", FRAUD_THRESHOLD="40")
    demo, other = helpers.token(client), helpers.token(client, "other", "other-secret")

    def final_status(access_token: str) -> dict[str, object]:
        body = helpers.order_body(customer_id="shared", SKU_STICKER=1)
        return helpers.wait_final(client, helpers.place(client, access_token, body)["status_url"])

    assert [final_status(other)["status"] for _ in range(2)] == ["COMPLETED"] * 2
    assert final_status(demo)["status"] == "COMPLETED"  # other's burst is not demo's customer's
    third = final_status(other)  # demo's order is not other's customer's either: 3, not 4
    assert third["status"] == "REJECTED"
    assert "3 orders in 60 s" in str(third["reason"]), third


def test_transient_payment_errors_are_retried_to_completion(
    running: tuple[local.LocalPipeline, httpx.Client, str],
) -> None:
    pipeline, client, access_token = running
    accepted = helpers.place(client, access_token, helpers.order_body(token="tok_transient"))
    final = helpers.wait_final(client, accepted["status_url"])
    assert final["status"] == "COMPLETED"
    assert list(helpers.charges(pipeline)) == [accepted["order_id"]]


def test_exhausted_retries_end_failed_in_the_dlq_with_stock_released(
    make_pipeline: PipelineFactory,
    start_api: ServiceFactory,
    start_processor: ServiceFactory,
    api_client: Clients,
) -> None:
    pipeline = make_pipeline(visibility_timeout=1, max_receive_count=3)
    api = start_api(pipeline)
    start_processor(pipeline)
    client = api_client(api)
    before = helpers.stock(pipeline, "SKU-HOODIE")
    accepted = helpers.place_order(client, token="tok_unavailable", SKU_HOODIE=1)
    final = helpers.wait_final(client, accepted["status_url"], timeout=90)
    assert final["status"] == "FAILED"
    assert "failed 3 times" in final["reason"]
    assert helpers.stock(pipeline, "SKU-HOODIE") == before
    assert helpers.charges(pipeline) == {}
    # The redrive moves the message on its next receive after the third.
    dlq = f"{pipeline.queue_name}-dlq"
    helpers.eventually(
        lambda: helpers.queue_depths(pipeline),
        until=lambda d: d == {pipeline.queue_name: 0, dlq: 1},
        timeout=30,
    )
