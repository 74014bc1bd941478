"""Traces: OpenTelemetry spans exported over OTLP/HTTP when an endpoint is configured.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Then
the SDK's own environment variables apply unchanged: `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default
`parentbased_always_on`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`. Off, `enabled` is False,
`tracer` is the API's no-op tracer and every hook in the services returns after reading
`enabled`: no span, no attribute, no message attribute is built.

The spans follow the OpenTelemetry semantic conventions (HTTP server, messaging with the
`aws_sqs` refinements, AWS SDK client calls, DynamoDB); docs/tracing.md shows how they link up.
Attributes that are not needed to take the sampling decision are set only on recording spans.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation import tracecontext
from opentelemetry.util import types as otel_types

from order_common import contract

log = logging.getLogger(__name__)

SCOPE_NAME = "order-pipeline"
"""The instrumentation scope of every span the services make."""

Span = trace.Span

enabled = False
"""Whether spans are made at all; read by every hook before it does anything."""

tracer: trace.Tracer = trace.NoOpTracer()

_shutdown: Callable[[], None] | None = None

# W3C trace context only, whatever OTEL_PROPAGATORS says: the message attributes that carry it
# are counted against SQS's limit of 10, so what rides on a message must not vary.
_W3C = tracecontext.TraceContextTextMapPropagator()

_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()

_NO_PARENT = otel_context.Context()

_HTTP_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)

UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes: a span each every few seconds per pod would drown the orders."""

_AS_PARENT: Mapping[str, otel_types.AttributeValue] = {"opentracing.ref_type": "child_of"}
"""On a link that repeats its span's parent. Jaeger folds such a link into the parent reference,
with the link's type: FOLLOWS_FROM unless the link says child_of."""

_batch_links: contextvars.ContextVar[tuple[trace.Link, ...]] = contextvars.ContextVar(
    "batch_links", default=()
)
"""Links to every order a call made inside `across` serves."""


def endpoint_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(*, default_service_name: str) -> trace.TracerProvider | None:
    """Export this process's spans over OTLP/HTTP if an endpoint is configured (see the module
    docstring); return the provider, None when tracing stays off. Call once per process,
    before the AWS clients are created (they register their hooks only when tracing is on)."""
    if not endpoint_configured() or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    # Imported here: a process that does not trace never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.sdk import resources
    from opentelemetry.sdk import trace as sdk_trace
    from opentelemetry.sdk.trace import export

    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported; using it")
    # Given explicitly, the name would override OTEL_SERVICE_NAME: that variable wins here.
    service_name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = sdk_trace.TracerProvider(
        resource=resources.Resource.create({resources.SERVICE_NAME: service_name}),
        shutdown_on_exit=False,  # `shutdown` below, once, from the service or at exit
    )
    provider.add_span_processor(export.BatchSpanProcessor(trace_exporter.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    install(provider)
    global _shutdown
    _shutdown = provider.shutdown
    atexit.register(shutdown)
    log.info("tracing on: service %s, sampler %s", service_name, provider.sampler.get_description())
    return provider


def install(provider: trace.TracerProvider) -> None:
    """Make spans through `provider` (`configure` does; tests pass an in-memory one)."""
    global enabled, tracer
    tracer = provider.get_tracer(SCOPE_NAME)
    enabled = True


def uninstall() -> None:
    """Back to no tracing (tests)."""
    global enabled, tracer
    tracer = trace.NoOpTracer()
    enabled = False


def shutdown() -> None:
    """Export what is still buffered and stop; safe to call more than once."""
    global _shutdown
    if _shutdown is not None:
        stop, _shutdown = _shutdown, None
        stop()
        uninstall()


# --- context ---------------------------------------------------------------------------


def activated(span: Span | None) -> AbstractContextManager[Any]:
    """Make `span` the current span (its children and log lines belong to it); nothing when
    None. The span is neither ended nor marked by an exception passing through."""
    if span is None:
        return _NOTHING
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def attach(span: Span | None) -> contextvars.Token[otel_context.Context] | None:
    """Make `span` current until `detach` (for code that cannot use a `with` block)."""
    return None if span is None else otel_context.attach(trace.set_span_in_context(span))


def detach(token: contextvars.Token[otel_context.Context] | None) -> None:
    if token is not None:
        otel_context.detach(token)


def across(spans: Iterable[Span | None]) -> AbstractContextManager[Any]:
    """For a call shared by several orders (a batch): the first order's span is its parent,
    and each order's span gets a link from it. `spans` is not read when tracing is off."""
    if not enabled:
        return _NOTHING
    live = [span for span in spans if span is not None]
    return _across(live) if live else _NOTHING


@contextlib.contextmanager
def _across(spans: list[Span]) -> Iterator[None]:
    first, *others = (span.get_span_context() for span in spans)
    token = _batch_links.set(
        (trace.Link(first, _AS_PARENT), *(trace.Link(context) for context in others))
    )
    try:
        with activated(spans[0]):
            yield
    finally:
        _batch_links.reset(token)


def current() -> Span | None:
    """The current span, to hand to `across` later; None when tracing is off."""
    return trace.get_current_span() if enabled else None


def current_ids() -> tuple[str, str] | None:
    """The current recording span's trace and span ids in hex, as trace backends show them."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def annotate(key: str, value: otel_types.AttributeValue) -> None:
    """Set an attribute on the current span, if it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(key, value)


def record_error(span: Span | None, error: BaseException) -> None:
    if span is not None and span.is_recording():
        span.record_exception(error)
        span.set_status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        span.set_attribute("error.type", error_type(error))


def error_type(error: BaseException | str) -> str:
    """A low-cardinality name for a failure: the AWS error code, else the exception's class."""
    if isinstance(error, str):
        return error
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    return str(code) if code else type(error).__qualname__


# --- HTTP server --------------------------------------------------------------------------


def start_server_span(scope: Mapping[str, Any], headers: Mapping[bytes, bytes]) -> Span | None:
    """The SERVER span of one request, continuing the caller's trace from its `traceparent`;
    None for probe and scrape paths."""
    path = scope["path"]
    if path in UNTRACED_PATHS:
        return None
    carrier = _w3c_headers(headers)
    # No traceparent: a trace of its own, whatever context the server runs the request in.
    parent = _W3C.extract(carrier) if carrier else _NO_PARENT
    method = scope["method"]
    known = method if method in _HTTP_METHODS else "_OTHER"
    attributes: dict[str, otel_types.AttributeValue] = {
        "http.request.method": known,
        "url.path": path,
        "url.scheme": scope.get("scheme", "http"),
    }
    if known != method:
        attributes["http.request.method_original"] = method
    # url.query is left out on purpose: status URLs carry their signature there.
    return tracer.start_span(
        "HTTP" if known == "_OTHER" else known,
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes=attributes,
    )


def end_server_span(
    span: Span, *, method: str, route: str | None, status: int, error: BaseException | None
) -> None:
    """Name the span after its route template, record the answer, end it."""
    if span.is_recording():
        if route is not None:
            if method in _HTTP_METHODS:
                span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if error is not None:
            span.record_exception(error)
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)
            span.set_attribute("error.type", error_type(error) if error else str(status))
    span.end()


def _w3c_headers(headers: Mapping[bytes, bytes]) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for name in (b"traceparent", b"tracestate"):
        value = headers.get(name)
        if value:
            carrier[name.decode()] = value.decode("latin-1")
    return carrier


# --- messaging ------------------------------------------------------------------------------


@functools.cache
def _messaging_attributes(
    queue_name: str, operation_type: str, operation_name: str
) -> Mapping[str, otel_types.AttributeValue]:
    """What a messaging span needs at creation (samplers may read it); one per queue."""
    return {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": queue_name,
        "messaging.operation.type": operation_type,
        "messaging.operation.name": operation_name,
    }


def producing(queue_name: str, order_id: str) -> AbstractContextManager[Span | None]:
    """The PRODUCER span of one order's message: its "create" span, whose context the message
    carries (the SendMessageBatch call it rides in links to it). Current inside the block;
    ended, and marked failed by an exception, on the way out. None when tracing is off."""
    if not enabled:
        return _NOTHING
    span = tracer.start_span(
        f"create {queue_name}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_messaging_attributes(queue_name, "create", "create"),
    )
    if span.is_recording():
        span.set_attribute("order_pipeline.order.id", order_id)
    return trace.use_span(span, end_on_exit=True)


def message_trace_context(span: Span | None) -> dict[str, str]:
    """`traceparent` (and `tracestate` when there is one) naming `span`, for the message."""
    carrier: dict[str, str] = {}
    if span is not None:
        _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def set_message_id(span: Span | None, message_id: str) -> None:
    if span is not None and span.is_recording():
        span.set_attribute("messaging.message.id", message_id)


def _creation_context(message: Mapping[str, Any]) -> trace.SpanContext:
    carrier = contract.trace_carrier(message.get("MessageAttributes", {}))
    return trace.get_current_span(_W3C.extract(carrier)).get_span_context()


def start_processing(queue_name: str, message: Mapping[str, Any]) -> Span | None:
    """The CONSUMER "process" span of one received message, whose parent is the message's
    creation context (the order's PRODUCER span in the API), so one trace runs from the HTTP
    request to the order's final write; it also links to that context, as the conventions ask.
    A message without trace context starts a trace of its own. None when tracing is off."""
    if not enabled:
        return None
    creation = _creation_context(message)
    parent = trace.set_span_in_context(trace.NonRecordingSpan(creation))
    span = tracer.start_span(
        f"process {queue_name}",
        context=parent,  # an invalid creation context makes this a root span
        kind=trace.SpanKind.CONSUMER,
        attributes=_messaging_attributes(queue_name, "process", "process"),
        links=[trace.Link(creation, _AS_PARENT)] if creation.is_valid else None,
    )
    if span.is_recording():
        span.set_attribute("messaging.message.id", message["MessageId"])
    return span


def end_processing(span: Span | None, *, retried: bool) -> None:
    """End a process span; a message left for redelivery is a failed processing."""
    if span is None:
        return
    if retried and span.is_recording():
        span.set_status(trace.StatusCode.ERROR, "left for redelivery")
    span.end()


# --- AWS SDK calls -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AwsEndpoint:
    """What a client's calls have in common, for their spans."""

    service: str
    """The SDK's service id: `SQS`, `DynamoDB`."""
    region: str
    host: str
    port: int | None

    @classmethod
    def of(cls, *, service: str, region: str, endpoint_url: str) -> AwsEndpoint:
        url = urlsplit(endpoint_url)
        return cls(str(service), region, url.hostname or "", url.port)

    @functools.cached_property
    def attributes(self) -> Mapping[str, otel_types.AttributeValue]:
        attributes: dict[str, otel_types.AttributeValue] = {
            "rpc.system": "aws-api",
            "rpc.service": self.service,
            "cloud.region": self.region,
            "server.address": self.host,
        }
        if self.port is not None:
            attributes["server.port"] = self.port
        if self.service == "DynamoDB":
            attributes["db.system.name"] = "aws.dynamodb"
        elif self.service == "SQS":
            attributes["messaging.system"] = "aws_sqs"
        return attributes


_SQS_OPERATION_TYPES = {
    "SendMessage": "send",
    "SendMessageBatch": "send",
    "ReceiveMessage": "receive",
    "DeleteMessage": "settle",
    "DeleteMessageBatch": "settle",
    "ChangeMessageVisibility": "settle",
    "ChangeMessageVisibilityBatch": "settle",
}


def record_aws_call(
    endpoint: AwsEndpoint,
    operation: str,
    params: Mapping[str, Any],
    *,
    started: int,
    result: Mapping[str, Any] | None = None,
    error: BaseException | str | None = None,
) -> None:
    """The CLIENT span of one AWS call (the SDK's retries included), recorded once the call
    has ended (`started`: its start, `time.time_ns()`).

    Recorded only inside a trace: calls made outside any (start-up lookups, queue-depth
    readings, readiness checks, visibility heartbeats, idle long polls) are housekeeping, and a
    trace each would bury the orders. The exception is a ReceiveMessage that brought messages:
    it is the batch's "receive" span, the root of its own trace, linking to each message's
    creation context, as the messaging conventions have it.
    """
    links: list[trace.Link] = list(_batch_links.get())
    inside = trace.get_current_span().get_span_context().is_valid
    received = operation == "ReceiveMessage" and result is not None and result.get("Messages")
    if not inside and not received:
        return
    if received and result is not None:
        links += [_received_link(m) for m in result["Messages"]]
    attributes = dict(endpoint.attributes)
    attributes["rpc.method"] = operation
    queue_url = params.get("QueueUrl") if endpoint.service == "SQS" else None
    if queue_url is not None:
        attributes["messaging.destination.name"] = str(queue_url).rsplit("/", 1)[-1]
        attributes["messaging.operation.type"] = _SQS_OPERATION_TYPES.get(operation, operation)
        attributes["messaging.operation.name"] = operation
    span = tracer.start_span(
        f"{endpoint.service}.{operation}",
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
        links=[link for link in links if link.context.is_valid] or None,
        start_time=started,
    )
    if span.is_recording():
        span.set_attributes(_call_attributes(endpoint.service, operation, params, result))
        if error is not None:
            span.set_attribute("error.type", error_type(error))
            span.set_status(trace.StatusCode.ERROR, str(error))
    span.end(time.time_ns())


def _received_link(message: Mapping[str, Any]) -> trace.Link:
    return trace.Link(
        _creation_context(message), attributes={"messaging.message.id": message["MessageId"]}
    )


def _call_attributes(
    service: str, operation: str, params: Mapping[str, Any], result: Mapping[str, Any] | None
) -> dict[str, otel_types.AttributeValue]:
    """The attributes that depend on the call's request and answer."""
    attributes: dict[str, otel_types.AttributeValue] = {}
    if service == "DynamoDB":
        tables = _table_names(params)
        if tables:
            attributes["aws.dynamodb.table_names"] = tables
    elif service == "SQS":
        if "QueueUrl" in params:
            attributes["aws.sqs.queue.url"] = str(params["QueueUrl"])
        if "Entries" in params:
            attributes["messaging.batch.message_count"] = len(params["Entries"])
        elif operation == "ReceiveMessage" and result is not None:
            attributes["messaging.batch.message_count"] = len(result.get("Messages", ()))
        elif operation == "SendMessage" and result is not None and "MessageId" in result:
            attributes["messaging.message.id"] = str(result["MessageId"])
    return attributes


def _table_names(params: Mapping[str, Any]) -> list[str]:
    if "TableName" in params:
        return [str(params["TableName"])]
    if "RequestItems" in params:
        return sorted(params["RequestItems"])
    if "TransactItems" in params:
        return sorted(
            {action["TableName"] for item in params["TransactItems"] for action in item.values()}
        )
    return []
