"""One order, one trace: the real API and processor export their spans over OTLP/HTTP to a real
Jaeger, and Jaeger's query API holds, in the trace the caller started, the request's SERVER
span, the order's PRODUCER span, the SendMessageBatch CLIENT span, the processor's CONSUMER
process span and the DynamoDB write that recorded COMPLETED, linked parent to child. And the
two AWS clients (the lean one, aiobotocore's through its hooks) record their calls' spans,
failures included, against the real engines."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import export
from opentelemetry.sdk.trace.export import in_memory_span_exporter

from order_common import aws, tracing
from order_devtools import jaeger as local_jaeger
from order_devtools import local
from tests.integration import helpers
from tests.integration.conftest import PipelineFactory, ServiceFactory

pytestmark = pytest.mark.integration


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _parent(span: dict[str, Any]) -> str | None:
    parents = [r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    assert len(parents) <= 1, span
    return parents[0] if parents else None


def _fetch(query_url: str, trace_id: str) -> dict[str, Any] | None:
    answer = httpx.get(f"{query_url}/api/traces/{trace_id}", timeout=10)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    data = answer.json()["data"]
    return data[0] if data else None


def _complete(found: dict[str, Any] | None) -> bool:
    """Both services' spans are in, the final write among them."""
    if found is None:
        return False
    names = {s["operationName"] for s in found["spans"]}
    return (
        {"POST /v1/orders", "SQS.SendMessageBatch"} <= names
        and any(name.startswith("process ") for name in names)
        and "DynamoDB.TransactWriteItems" in names
    )


def test_one_order_is_one_trace_from_the_request_to_its_completed_write(
    make_pipeline: PipelineFactory,
    start_traced_api: ServiceFactory,
    start_traced_processor: ServiceFactory,
    jaeger: local_jaeger.RunningJaeger,
) -> None:
    pipeline: local.LocalPipeline = make_pipeline()
    api = start_traced_api(pipeline)
    start_traced_processor(pipeline)
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with httpx.Client(base_url=api.health_url.removesuffix("/healthz"), timeout=10) as client:
        access = helpers.token(client)
        accepted = client.post(
            "/v1/orders",
            json=helpers.order_body(),
            headers={
                **helpers.auth(access),
                "traceparent": f"00-{caller_trace}-{caller_span}-01",
            },
        )
        assert accepted.status_code == 202, accepted.text
        order_id = accepted.json()["order_id"]
        final = helpers.wait_final(client, accepted.json()["status_url"])
    assert final["status"] == "COMPLETED"

    found = helpers.eventually(
        lambda: _fetch(jaeger.query_url, caller_trace), until=_complete, timeout=30
    )
    assert found is not None
    spans = found["spans"]
    by_id = {s["spanID"]: s for s in spans}
    services = {pid: p["serviceName"] for pid, p in found["processes"].items()}

    def one(name: str, **tags: Any) -> dict[str, Any]:
        matching = [
            s for s in spans if s["operationName"] == name and tags.items() <= _tags(s).items()
        ]
        assert len(matching) == 1, (name, tags, [s["operationName"] for s in spans])
        return matching[0]

    server = one("POST /v1/orders", **{"span.kind": "server"})
    producer = one(
        f"create {pipeline.queue_name}",
        **{"span.kind": "producer", "order_pipeline.order.id": order_id},
    )
    send = one("SQS.SendMessageBatch", **{"span.kind": "client"})
    process = one(f"process {pipeline.queue_name}", **{"span.kind": "consumer"})

    # the caller's trace continues in the API; the order's span is the request's child
    assert _parent(server) == caller_span
    assert _tags(server)["http.route"] == "/v1/orders"
    assert _tags(server)["http.response.status_code"] in (202, "202")
    assert _parent(producer) == server["spanID"]
    # the API's own DynamoDB calls (aiobotocore's client: the rate limit) are the request's
    assert any(
        s["operationName"] == "DynamoDB.UpdateItem" and _parent(s) == server["spanID"]
        for s in spans
    )
    # the batch's call is under the order's producer span
    assert _parent(send) == producer["spanID"]
    # across the queue: the processor's span is the producer's child, in another service
    assert _parent(process) == producer["spanID"]
    assert services[server["processID"]] == "order-api"
    assert services[process["processID"]] == "order-processor"
    assert _tags(process)["messaging.message.id"] == _tags(producer)["messaging.message.id"]

    # every DynamoDB call of the order is under its process span, down to the final write:
    # the last one, a transaction on the orders table alone (COMPLETED, no stock to release)
    writes = [
        s
        for s in spans
        if s["operationName"].startswith("DynamoDB.") and _parent(s) == process["spanID"]
    ]
    assert writes, [s["operationName"] for s in spans]
    last = max(writes, key=lambda s: s["startTime"])
    assert last["operationName"] == "DynamoDB.TransactWriteItems"
    tables = _tags(last)["aws.dynamodb.table_names"]
    tables = json.loads(tables) if isinstance(tables, str) else tables
    assert tables == [f"{pipeline.table_prefix}orders"]
    assert _tags(last)["db.system.name"] == "aws.dynamodb"
    assert _tags(process).get("order_pipeline.order.status") == "COMPLETED"
    # nothing in the trace dangles: every parent but the caller's is one of its spans
    for span in spans:
        parent = _parent(span)
        assert parent is None or parent == caller_span or parent in by_id, span


@pytest.fixture
def spans() -> Iterator[in_memory_span_exporter.InMemorySpanExporter]:
    """Tracing on in this process, into memory."""
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.install(provider)  # before the clients: they hook in only when tracing is on
    yield exporter
    tracing.uninstall()
    provider.shutdown()


async def test_both_aws_clients_record_a_client_span_per_call_inside_a_trace(
    make_pipeline: PipelineFactory, spans: in_memory_span_exporter.InMemorySpanExporter
) -> None:
    pipeline: local.LocalPipeline = make_pipeline()
    settings = pipeline.aws_settings()
    missing = {"TableName": f"{pipeline.table_prefix}missing", "Key": {"k": {"S": "1"}}}
    async with (
        aws.dynamodb_client(settings) as sdk,
        aws.dynamodb_hot_path(sdk, settings) as hot,
        aws.sqs_client(settings) as sqs,
    ):
        queue_url = (await sqs.get_queue_url(QueueName=pipeline.queue_name))["QueueUrl"]
        assert spans.get_finished_spans() == ()  # outside any trace: housekeeping, no span
        with tracing.tracer.start_as_current_span("order") as order:
            await hot.get_item(TableName=settings.catalog_table, Key={"sku": {"S": "SKU-MUG"}})
            with pytest.raises(ClientError):
                await sdk.get_item(**missing)  # type: ignore[arg-type]
            with pytest.raises(ClientError):
                await hot.get_item(**missing)  # type: ignore[arg-type]
            await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    recorded = [s for s in spans.get_finished_spans() if s.name != "order"]
    assert [s.name for s in recorded] == [
        "DynamoDB.GetItem",
        "DynamoDB.GetItem",
        "DynamoDB.GetItem",
        "SQS.GetQueueAttributes",
    ]
    for span in recorded:
        assert span.kind is trace.SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == order.get_span_context().span_id
        assert span.attributes is not None
        assert span.attributes["rpc.system"] == "aws-api"
    found, sdk_miss, hot_miss, queue = recorded
    assert found.attributes is not None
    assert found.attributes["aws.dynamodb.table_names"] == (settings.catalog_table,)
    assert found.status.status_code is trace.StatusCode.UNSET
    for failed in (sdk_miss, hot_miss):  # the aiobotocore hook and the lean client alike
        assert failed.status.status_code is trace.StatusCode.ERROR
        assert failed.attributes is not None
        assert failed.attributes["error.type"] == "ResourceNotFoundException"
        assert failed.attributes["db.system.name"] == "aws.dynamodb"
    assert queue.attributes is not None
    assert queue.attributes["messaging.destination.name"] == pipeline.queue_name
    assert queue.attributes["server.address"] == "127.0.0.1"
