"""The order record as the orders table holds it, written by the processor and the API.

Type-level only: records are plain dicts on the hot path, checked by mypy, never validated
at run time. Reads go through `order_record`, the one place that trusts the table's shape.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, cast

from order_common import items


class LineRecord(TypedDict):
    """One priced line of an order."""

    sku: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int


class OrderRecord(TypedDict):
    """An order's item in the orders table.

    The processor creates it as PROCESSING, or final at once when the order never reserved
    stock; the API creates it as CANCELLED when processing has not started. A final update
    adds what the outcome learned.
    """

    order_id: str
    status: str
    """An `OrderStatus` value (read back as a plain string)."""
    client_id: str
    updated_at: float
    customer_id: NotRequired[str]
    """Absent from a cancellation, like currency and accepted_at."""
    currency: NotRequired[str]
    accepted_at: NotRequired[float]
    items: NotRequired[list[LineRecord]]
    """Absent when the order was refused before it was priced, like total_cents."""
    total_cents: NotRequired[int]
    reserved: NotRequired[bool]
    """True while the order holds its stock; only an order that reserved it has one."""
    started_at: NotRequired[float]
    finished_at: NotRequired[float]
    reason: NotRequired[str]
    payment_id: NotRequired[str]
    fraud_score: NotRequired[int]


def order_record(item: dict[str, Any]) -> OrderRecord:
    """The record of a DynamoDB item read from the orders table."""
    # Only this service and the API write the table: its items are trusted, not validated.
    return cast("OrderRecord", items.from_item(item))
