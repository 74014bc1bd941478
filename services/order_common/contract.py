"""The message contract between the API and the processor.

The API puts one `OrderMessage` per accepted order on the queue; the processor reads it back.
`schema_version` lets a processor refuse (and dead-letter) a message it does not understand
instead of guessing.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pydantic

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
