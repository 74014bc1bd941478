"""Small client-side helpers for the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import httpx

from order_api import ratelimit
from order_devtools import local

T = TypeVar("T")

FINAL = {"COMPLETED", "REJECTED", "FAILED", "CANCELLED"}


def token(client: httpx.Client, client_id: str = "demo", secret: str = "demo-secret") -> str:
    response = client.post("/v1/auth/token", json={"client_id": client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def auth(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def order_body(
    *, customer_id: str = "cust-1", token: str = "tok_ok", **items: int
) -> dict[str, Any]:
    lines = items or {"SKU_MUG": 1}
    return {
        "customer_id": customer_id,
        "items": [{"sku": sku.replace("_", "-"), "quantity": q} for sku, q in lines.items()],
        "currency": "USD",
        "payment_token": token,
    }


def place(client: httpx.Client, access_token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/orders", json=body, headers=auth(access_token))
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def place_order(client: httpx.Client, **order: Any) -> dict[str, Any]:
    """One order, `order_body(**order)`, placed with a fresh token of the demo client."""
    return place(client, token(client), order_body(**order))


def wait_final(client: httpx.Client, status_url: str, *, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(status_url)
        assert response.status_code == 200, response.text
        last = response.json()
        if last["status"] in FINAL:
            return last
        time.sleep(0.1)
    raise AssertionError(f"order did not reach a final status in {timeout} s: {last}")


def stock(pipeline: local.LocalPipeline, sku: str) -> int:
    dynamodb = boto3.client("dynamodb", endpoint_url=pipeline.dynamodb_endpoint)
    item = dynamodb.get_item(
        TableName=f"{pipeline.table_prefix}catalog", Key={"sku": {"S": sku}}, ConsistentRead=True
    )["Item"]
    return int(item["stock"]["N"])


def charges(pipeline: local.LocalPipeline) -> dict[str, int]:
    """order id -> charged amount, from the simulated gateway's ledger."""
    dynamodb = boto3.client("dynamodb", endpoint_url=pipeline.dynamodb_endpoint)
    found: dict[str, int] = {}
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=f"{pipeline.table_prefix}payments"
    ):
        for item in page["Items"]:
            found[item["order_id"]["S"]] = int(item["amount_cents"]["N"])
    return found


def queue_depths(pipeline: local.LocalPipeline) -> dict[str, int]:
    """Visible + in-flight messages of the queue and of its DLQ."""
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    depths: dict[str, int] = {}
    for name in (pipeline.queue_name, f"{pipeline.queue_name}-dlq"):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        depths[name] = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
    return depths


def in_a_fresh_rate_limit_window(
    needed_seconds: float, *, window_seconds: int = ratelimit.WINDOW_SECONDS
) -> None:
    """Wait for the API's next fixed window (of the rate limit, or of `window_seconds`) if this
    one ends within `needed_seconds`: requests straddling two windows may pass a limit."""
    left = window_seconds - time.time() % window_seconds
    if left < needed_seconds:
        time.sleep(left + 0.1)


def eventually(probe: Callable[[], T], *, until: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Poll `probe` until `until` holds for its value; fail with the last value."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not until(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s; last value: {value!r}")
        time.sleep(0.2)
        value = probe()
    return value


def metric(service: local.ServiceProcess, name: str) -> float:
    """The sum of a service's Prometheus samples whose name starts with `name`."""
    text = httpx.get(service.health_url.replace("/healthz", "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total
