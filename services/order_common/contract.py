"""The message contract between the API and the processor.

The API puts one `OrderMessage` per accepted order on the queue; the processor reads it back.
`schema_version` lets a processor refuse (and dead-letter) a message it does not understand
instead of guessing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pydantic

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

SCHEMA_VERSION: Literal[1] = 1

MAX_ITEMS_PER_ORDER = 100
MAX_QUANTITY_PER_ITEM = 1000
SKU_PATTERN = r"^[A-Z0-9][A-Z0-9-]{1,31}$"


class OrderStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {OrderStatus.COMPLETED, OrderStatus.REJECTED, OrderStatus.FAILED, OrderStatus.CANCELLED}
)

Sku = Annotated[str, pydantic.StringConstraints(pattern=SKU_PATTERN)]
Quantity = Annotated[int, pydantic.Field(gt=0, le=MAX_QUANTITY_PER_ITEM)]
Currency = Literal["USD"]


class _Strict(pydantic.BaseModel):
    # Unknown fields and type coercion ("5" for 5) are client errors, not things to guess at.
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class OrderItem(_Strict):
    sku: Sku
    quantity: Quantity


class OrderMessage(_Strict):
    """One accepted order, as queued."""

    schema_version: Literal[1] = SCHEMA_VERSION
    order_id: str
    client_id: str
    customer_id: str
    items: tuple[OrderItem, ...] = pydantic.Field(min_length=1, max_length=MAX_ITEMS_PER_ORDER)
    currency: Currency
    payment_token: str
    accepted_at: float
    """Unix time the API accepted the order; the processor measures end-to-end latency from it."""


def encode_message(message: OrderMessage) -> str:
    return message.model_dump_json()


def decode_message(body: str) -> OrderMessage:
    """Parse a queue body; raises `pydantic.ValidationError` for anything malformed."""
    return OrderMessage.model_validate_json(body, strict=False)


MAX_MESSAGE_ATTRIBUTES = 10
"""SQS refuses a message with more attributes than this."""

TRACE_CONTEXT_ATTRIBUTES = ("traceparent", "tracestate")
"""The W3C trace context of the order's PRODUCER span, as String message attributes."""

PRODUCER_VERSION_ATTRIBUTE = "producer_version"
"""The version of the API that queued the order: an API canary is judged also by how the
orders it produced end."""

UNKNOWN_PRODUCER = "unknown"
"""The producer of a message without a (well-formed) `producer_version`."""

VERSION_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
"""A release name fit for a Prometheus label value and a Kubernetes label value alike."""

_PRODUCER_VERSION = re.compile(VERSION_PATTERN)

MESSAGE_ATTRIBUTE_NAMES = ("request_id", PRODUCER_VERSION_ATTRIBUTE, *TRACE_CONTEXT_ATTRIBUTES)
"""Every message attribute the API sets, and so every one the processor asks for."""


def message_attributes(
    *, request_id: str, trace_context: Mapping[str, str], producer_version: str
) -> dict[str, MessageAttributeValueTypeDef]:
    """The attributes of an order's message: the API request that accepted it, the API's
    version, and the trace context (`traceparent`, `tracestate` when not empty) the processor
    continues."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        "request_id": {"DataType": "String", "StringValue": request_id},
        PRODUCER_VERSION_ATTRIBUTE: {"DataType": "String", "StringValue": producer_version},
    }
    for name in TRACE_CONTEXT_ATTRIBUTES:
        value = trace_context.get(name)
        if value:  # SQS refuses an empty String attribute
            attributes[name] = {"DataType": "String", "StringValue": value}
    return attributes


def producer_version(message_attributes: Mapping[str, Any]) -> str:
    """The producer's version a received message names; `unknown` when it names none, or
    something that is not a version (it becomes a label value: never anything unbounded)."""
    value = message_attributes.get(PRODUCER_VERSION_ATTRIBUTE, {}).get("StringValue")
    if isinstance(value, str) and _PRODUCER_VERSION.fullmatch(value):
        return value
    return UNKNOWN_PRODUCER


def trace_carrier(message_attributes: Mapping[str, Any]) -> dict[str, str]:
    """The trace context a received message carries (empty when it carries none)."""
    carrier: dict[str, str] = {}
    for name in TRACE_CONTEXT_ATTRIBUTES:
        value = message_attributes.get(name, {}).get("StringValue")
        if value:
            carrier[name] = value
    return carrier
