"""Traces, recorded by the SDK's in-memory exporter: the request's SERVER span, each order's
PRODUCER span and the trace context its message carries, the process spans the processor
parents on it, the batch calls' parents and links, the receive span's links, the ids in the
logs, and nothing at all when tracing is off.

Where a fake stands in for SQS or DynamoDB it records its calls through
`tracing.record_aws_call`, as the lean client and the aiobotocore hooks do; the real clients
are traced end to end in tests/integration/test_traces.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import fastapi
import pytest
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import export, sampling
from opentelemetry.sdk.trace.export import in_memory_span_exporter
from starlette import testclient

from order_api import accepting, batcher, middleware, schemas
from order_common import contract, logs, tracing
from order_processor import consumer, payments, workflow
from order_processor import settings as settings_module
from tests.unit.test_workflow import FakeGateway, FakeStore

SERVER, PRODUCER, CONSUMER, CLIENT = (
    trace.SpanKind.SERVER,
    trace.SpanKind.PRODUCER,
    trace.SpanKind.CONSUMER,
    trace.SpanKind.CLIENT,
)
SQS = tracing.AwsEndpoint.of(service="SQS", region="us-east-1", endpoint_url="http://sqs:9324")
DYNAMODB = tracing.AwsEndpoint.of(
    service="DynamoDB", region="us-east-1", endpoint_url="http://dynamodb:8000"
)
QUEUE_URL = "http://sqs:9324/000000000000/orders"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[in_memory_span_exporter.InMemorySpanExporter]:
    """Tracing on, into memory, for one test."""
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


def _hex(span: Any) -> tuple[str, str]:
    context = span.get_span_context() if hasattr(span, "get_span_context") else span.context
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _named(exporter: Any, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _one(exporter: Any, name: str) -> Any:
    found = _named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


# --- the API's SERVER span --------------------------------------------------------------------


def _api() -> testclient.TestClient:
    app = fastapi.FastAPI()

    @app.get("/v1/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"thing": thing_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("broken on purpose")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(middleware.RequestContextMiddleware, max_body_bytes=1000)
    return testclient.TestClient(app, raise_server_exceptions=False)


def test_a_request_gets_a_server_span_named_after_its_route_in_the_callers_trace(
    spans: Any,
) -> None:
    with _api() as client:
        answer = client.get(
            "/v1/things/42", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        )
    assert answer.status_code == 200
    span = _one(spans, "GET /v1/things/{thing_id}")
    assert span.kind is SERVER
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.path": "/v1/things/42",
        "url.scheme": "http",
        "http.route": "/v1/things/{thing_id}",
        "http.response.status_code": 200,
    }
    assert _hex(span)[0] == CALLER_TRACE
    assert format(span.parent.span_id, "016x") == CALLER_SPAN
    assert span.status.status_code is trace.StatusCode.UNSET


def test_a_request_that_fails_is_an_error_span_and_probes_are_not_traced(spans: Any) -> None:
    with _api() as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/healthz").status_code == 200
    [span] = spans.get_finished_spans()
    assert span.name == "GET /boom"
    assert span.parent is None  # no traceparent: a trace of its own
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in span.events] == ["exception"]


# --- the API's PRODUCER span and the message's trace context --------------------------------


@dataclass
class RecordingQueue:
    """SendMessageBatch as SQS answers it, traced as the lean client traces its calls."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    async def send_message_batch(self, **params: Any) -> dict[str, Any]:
        started = time.time_ns()
        await asyncio.sleep(0.002)  # two concurrent orders meet in one batch
        self.entries += params["Entries"]
        result = {
            "Successful": [{"Id": e["Id"], "MessageId": f"m-{e['Id']}"} for e in params["Entries"]],
            "Failed": [],
        }
        tracing.record_aws_call(SQS, "SendMessageBatch", params, started=started, result=result)
        return result


def _services(queue: RecordingQueue) -> Any:
    ids = iter(range(1, 100))
    send_batcher = batcher.SendBatcher(client=queue, queue_url=QUEUE_URL, max_wait=0.001)

    async def get_batcher() -> batcher.SendBatcher:
        return send_batcher

    return SimpleNamespace(
        settings=SimpleNamespace(queue_name="orders", app_version="v1"),
        signer=SimpleNamespace(new_order_id=lambda client_id: f"order-{next(ids)}"),
        send_batcher=get_batcher,
    )


def _accept(services: Any) -> Any:
    order = schemas.OrderCreate.model_validate(
        {
            "customer_id": "c-1",
            "currency": "USD",
            "payment_token": "tok_ok",
            "items": [{"sku": "SKU-MUG", "quantity": 1}],
        }
    )
    return accepting.accept(
        services,
        client_id="demo",
        order=order,
        idempotency_key=None,
        status_url_for=lambda order_id: f"http://api/v1/orders/{order_id}",
    )


def test_an_accepted_order_has_a_producer_span_whose_context_its_message_carries(
    spans: Any,
) -> None:
    queue = RecordingQueue()

    async def request() -> None:
        with tracing.tracer.start_as_current_span("POST /v1/orders", kind=SERVER):
            await _accept(_services(queue))

    asyncio.run(request())
    producer = _one(spans, "create orders")
    server = _one(spans, "POST /v1/orders")
    send = _one(spans, "SQS.SendMessageBatch")
    assert producer.kind is PRODUCER
    assert producer.parent.span_id == server.context.span_id
    assert dict(producer.attributes) == {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": "orders",
        "messaging.operation.type": "create",
        "messaging.operation.name": "create",
        "order_pipeline.order.id": "order-1",
        "messaging.message.id": "m-1",
    }
    [entry] = queue.entries
    trace_id, span_id = _hex(producer)
    flags = producer.context.trace_flags
    assert flags.sampled
    assert entry["MessageAttributes"]["traceparent"] == {
        "DataType": "String",
        "StringValue": f"00-{trace_id}-{span_id}-{flags:02x}",
    }
    assert "tracestate" not in entry["MessageAttributes"]  # none to carry
    # the API's version, by which the processor counts the orders' outcomes
    assert entry["MessageAttributes"]["producer_version"] == {
        "DataType": "String",
        "StringValue": "v1",
    }
    # the batch's CLIENT span: under the order's producer span, and linked to it
    assert send.kind is CLIENT
    assert send.parent.span_id == producer.context.span_id
    assert [(link.context.span_id, dict(link.attributes)) for link in send.links] == [
        (producer.context.span_id, {"opentracing.ref_type": "child_of"})
    ]
    assert send.attributes["rpc.system"] == "aws-api"
    assert send.attributes["rpc.service"] == "SQS"
    assert send.attributes["rpc.method"] == "SendMessageBatch"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "orders"
    assert send.attributes["messaging.batch.message_count"] == 1


def test_orders_sent_in_one_batch_keep_their_own_producer_spans_and_the_send_links_each(
    spans: Any,
) -> None:
    queue = RecordingQueue()

    async def requests() -> None:
        services = _services(queue)

        async def one() -> None:
            with tracing.tracer.start_as_current_span("POST /v1/orders", kind=SERVER):
                await _accept(services)

        await asyncio.gather(one(), one(), one())

    asyncio.run(requests())
    producers = _named(spans, "create orders")
    assert len({p.context.trace_id for p in producers}) == 3  # one trace per order
    sends = _named(spans, "SQS.SendMessageBatch")
    assert sum(s.attributes["messaging.batch.message_count"] for s in sends) == 3
    assert len(sends) < 3  # some orders shared a call
    linked = {link.context.span_id for s in sends for link in s.links}
    assert linked == {p.context.span_id for p in producers}
    for send in sends:  # parented on one of the orders it carried
        assert send.parent.span_id in {link.context.span_id for link in send.links}


def test_the_message_attributes_stay_within_the_sqs_limit_with_a_full_tracestate(
    spans: Any,
) -> None:
    # A caller whose tracestate holds 32 members, the most W3C allows.
    tracestate = ",".join(f"vendor{i}=value{i}" for i in range(32))
    caller = tracing._W3C.extract(
        {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": tracestate}
    )
    with (
        trace.use_span(trace.get_current_span(caller)),
        tracing.producing("orders", "order-1") as producer,
    ):
        attributes = contract.message_attributes(
            request_id="r" * 128,
            trace_context=tracing.message_trace_context(producer),
            producer_version="v" * 63,
        )
    assert attributes["tracestate"]["StringValue"] == tracestate
    assert attributes["producer_version"] == {"DataType": "String", "StringValue": "v" * 63}
    assert set(attributes) == set(contract.MESSAGE_ATTRIBUTE_NAMES)
    assert len(attributes) <= contract.MAX_MESSAGE_ATTRIBUTES
    assert all(a["DataType"] == "String" and a["StringValue"] for a in attributes.values())


# --- the processor ----------------------------------------------------------------------------


class TracedStore(FakeStore):
    """The workflow's fake store, each call recorded as the DynamoDB adapter's would be."""

    async def _traced(self, operation: str, call: Any) -> Any:
        started = time.time_ns()
        result = await call
        tracing.record_aws_call(
            DYNAMODB, operation, {"TableName": "orders"}, started=started, result={}
        )
        return result

    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        return await self._traced("TransactWriteItems:reserve", super().reserve(*args, **kwargs))

    async def reserve_together(self, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(
            "TransactWriteItems:reserve_together", super().reserve_together(*args, **kwargs)
        )

    async def complete_together(self, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(
            "TransactWriteItems:complete_together", super().complete_together(*args, **kwargs)
        )

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        return await self._traced("TransactWriteItems:finish", super().finish(*args, **kwargs))


class TracedHot:
    """The consumer's DeleteMessageBatch, recorded as the lean client's would be."""

    async def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        started = time.time_ns()
        result = {"Successful": [{"Id": e["Id"]} for e in params["Entries"]], "Failed": []}
        tracing.record_aws_call(SQS, "DeleteMessageBatch", params, started=started, result=result)
        return result


def _sent(order_id: str) -> tuple[dict[str, Any], Any]:
    """A message as the API queues it, under a PRODUCER span of its own trace."""
    with tracing.producing("orders", order_id) as producer:
        attributes = contract.message_attributes(
            request_id="r-1",
            trace_context=tracing.message_trace_context(producer),
            producer_version="v1",
        )
    order = contract.OrderMessage(
        order_id=order_id,
        client_id="demo",
        customer_id=f"customer-{order_id}",
        items=(contract.OrderItem(sku="SKU-A", quantity=1),),
        currency="USD",
        payment_token="tok_ok",
        accepted_at=time.time(),
    )
    message = {
        "MessageId": f"id-{order_id}",
        "ReceiptHandle": f"handle-{order_id}",
        "Body": contract.encode_message(order),
        "MessageAttributes": attributes,
    }
    return message, producer


def _process(messages: list[dict[str, Any]]) -> consumer.Consumer:
    settings = settings_module.ProcessorSettings(payment_gateway="simulator", payment_attempts=1)
    worker = consumer.Consumer(
        client=None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        hot=TracedHot(),  # type: ignore[arg-type]
        queue=consumer.QueueInfo(QUEUE_URL, None, max_receive_count=3, visibility_timeout=30),
        order_workflow=workflow.OrderWorkflow(
            store=TracedStore({"SKU-A": (500, 10)}),  # type: ignore[arg-type]
            gateway=FakeGateway(),  # type: ignore[arg-type]
            settings=settings,
        ),
        concurrency=10,
    )
    asyncio.run(worker._process_batch(messages))  # type: ignore[arg-type]
    return worker


def test_a_message_is_processed_under_a_span_whose_parent_is_its_producer_span(
    spans: Any,
) -> None:
    message, producer = _sent("order-1")
    assert _process([message]).processed == 1
    process = _one(spans, "process orders")
    assert process.kind is CONSUMER
    assert process.context.trace_id == producer.get_span_context().trace_id
    assert process.parent.span_id == producer.get_span_context().span_id
    # the link the conventions ask for repeats the parent, and says so (Jaeger keeps CHILD_OF)
    assert [(link.context.span_id, dict(link.attributes)) for link in process.links] == [
        (producer.get_span_context().span_id, {"opentracing.ref_type": "child_of"})
    ]
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.id"] == "id-order-1"
    assert process.attributes["order_pipeline.order.status"] == "COMPLETED"
    # the order's own writes, down to the final one, are under its process span
    for name in ("TransactWriteItems:reserve", "TransactWriteItems:finish"):
        write = _one(spans, f"DynamoDB.{name}")
        assert write.parent.span_id == process.context.span_id, name
        assert write.attributes["db.system.name"] == "aws.dynamodb"
        assert write.attributes["aws.dynamodb.table_names"] == ("orders",)


def test_steps_shared_by_a_batch_are_parented_on_one_order_and_linked_to_each(
    spans: Any,
) -> None:
    sent = [_sent(f"order-{i}") for i in range(3)]
    assert _process([m for m, _ in sent]).processed == 3
    processes = {p.attributes["messaging.message.id"]: p for p in _named(spans, "process orders")}
    for message, producer in sent:  # each in its own order's trace
        process = processes[message["MessageId"]]
        assert process.parent.span_id == producer.get_span_context().span_id
    ids = {p.context.span_id for p in processes.values()}
    for name in (
        "DynamoDB.TransactWriteItems:reserve_together",
        "DynamoDB.TransactWriteItems:complete_together",
        "SQS.DeleteMessageBatch",
    ):
        shared = _one(spans, name)
        assert shared.parent.span_id in ids, name
        assert {link.context.span_id for link in shared.links} == ids, name
    assert not _named(spans, "DynamoDB.TransactWriteItems:finish")  # completed together


def test_a_failing_order_marks_its_own_process_span_only(spans: Any) -> None:
    good, _ = _sent("order-good")
    bad, _ = _sent("order-bad")
    bad["Body"] = bad["Body"].replace("tok_ok", "tok_unavailable")  # payment keeps failing
    worker = _process([good, bad])
    assert (worker.processed, worker.retried) == (1, 1)
    processes = {p.attributes["messaging.message.id"]: p for p in _named(spans, "process orders")}
    assert processes["id-order-good"].status.status_code is trace.StatusCode.UNSET
    failed = processes["id-order-bad"]
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes["error.type"] == "TransientPaymentError"
    assert [e.name for e in failed.events] == ["exception"]


class LedgerTable:
    """BatchWriteItem on the simulated gateway's ledger, recorded as the lean client would."""

    async def batch_write_item(self, **params: Any) -> dict[str, Any]:
        started = time.time_ns()
        await asyncio.sleep(0.001)
        tracing.record_aws_call(DYNAMODB, "BatchWriteItem", params, started=started, result={})
        return {"UnprocessedItems": {}}


def test_charges_written_to_the_ledger_together_link_each_orders_span(spans: Any) -> None:
    gateway = payments.SimulatedPaymentGateway(client=LedgerTable(), ledger_table="payments")  # type: ignore[arg-type]

    async def charge(order_id: str) -> trace.Span:
        with tracing.tracer.start_as_current_span(f"process {order_id}") as span:
            await gateway.charge(order_id=order_id, amount_cents=100, currency="USD", token="t")
            return span

    async def charges() -> list[trace.Span]:
        return await asyncio.gather(*(charge(f"order-{i}") for i in range(3)))

    orders = asyncio.run(charges())
    write = _one(spans, "DynamoDB.BatchWriteItem")  # one call for the three charges
    ids = {span.get_span_context().span_id for span in orders}
    assert write.parent.span_id in ids
    assert {link.context.span_id for link in write.links} == ids
    assert write.attributes["aws.dynamodb.table_names"] == ("payments",)


def test_a_receive_with_messages_is_a_span_linking_each_producer_and_idle_ones_are_not(
    spans: Any,
) -> None:
    sent = [_sent(f"order-{i}") for i in range(2)]
    spans.clear()
    params = {"QueueUrl": QUEUE_URL, "MaxNumberOfMessages": 10}
    now = time.time_ns()
    tracing.record_aws_call(SQS, "ReceiveMessage", params, started=now, result={})
    tracing.record_aws_call(SQS, "GetQueueAttributes", params, started=now, result={})
    assert spans.get_finished_spans() == ()  # an idle poll, housekeeping: outside any trace
    result = {"Messages": [m for m, _ in sent]}
    tracing.record_aws_call(SQS, "ReceiveMessage", params, started=now, result=result)
    receive = _one(spans, "SQS.ReceiveMessage")
    assert receive.kind is CLIENT
    assert receive.parent is None  # the batch's own trace
    assert receive.attributes["messaging.operation.type"] == "receive"
    assert receive.attributes["messaging.batch.message_count"] == 2
    assert [(link.context.span_id, dict(link.attributes)) for link in receive.links] == [
        (producer.get_span_context().span_id, {"messaging.message.id": message["MessageId"]})
        for message, producer in sent
    ]


# --- logs -------------------------------------------------------------------------------------


def _log_line(stream: io.StringIO) -> dict[str, Any]:
    logger = logging.getLogger("tests.tracing")
    handler = logs.json_handler(stream, component="test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("something happened")
    finally:
        logger.removeHandler(handler)
    line: dict[str, Any] = json.loads(stream.getvalue().splitlines()[-1])
    return line


def test_log_lines_inside_a_recording_span_carry_its_ids_and_others_none(spans: Any) -> None:
    stream = io.StringIO()
    with tracing.tracer.start_as_current_span("work") as span:
        inside = _log_line(stream)
    outside = _log_line(stream)
    assert (inside["trace_id"], inside["span_id"]) == _hex(span)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    # a span the sampler dropped records nothing, and its lines say nothing of it
    dropped = sdk_trace.TracerProvider(sampler=sampling.ALWAYS_OFF).get_tracer("t")
    with dropped.start_as_current_span("unsampled"):
        assert "trace_id" not in _log_line(stream)


# --- off --------------------------------------------------------------------------------------


def test_tracing_off_makes_no_span_and_no_trace_attribute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure(default_service_name="order-api") is None
    assert tracing.enabled is False
    assert isinstance(tracing.tracer, trace.NoOpTracer)
    # A provider exists in the process, but nothing reaches it.
    exporter = in_memory_span_exporter.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    queue = RecordingQueue()
    asyncio.run(_accept(_services(queue)))
    with _api() as client:
        client.get("/v1/things/1", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    [entry] = queue.entries
    assert set(entry["MessageAttributes"]) == {"request_id", "producer_version"}
    assert tracing.start_processing("orders", {"MessageId": "m", "MessageAttributes": {}}) is None
    assert exporter.get_finished_spans() == ()
    assert tracing.current_ids() is None


def test_tracing_is_configured_from_the_standard_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    try:
        provider = tracing.configure(default_service_name="order-processor")
        assert isinstance(provider, sdk_trace.TracerProvider)
        assert tracing.enabled is True
        assert provider.sampler.get_description() == "TraceIdRatioBased{0.25}"
        assert provider.resource.attributes["service.name"] == "order-processor"
    finally:
        tracing.shutdown()
    assert tracing.enabled is False
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shop-orders-api")
    try:
        provider = tracing.configure(default_service_name="order-api")
        assert isinstance(provider, sdk_trace.TracerProvider)
        assert provider.resource.attributes["service.name"] == "shop-orders-api"
    finally:
        tracing.shutdown()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.configure(default_service_name="order-api") is None
