"""The attribute values written for records: the same as boto3's serializer gives."""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer

from order_common import items


class _Status(enum.StrEnum):
    DONE = "DONE"


def _boto3(value: Any) -> Any:
    """What boto3 writes for a value, floats first made exact decimals (as DynamoDB needs)."""

    def exact(v: Any) -> Any:
        if isinstance(v, float):
            return Decimal(repr(v))
        if isinstance(v, dict):
            return {k: exact(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [exact(x) for x in v]
        return v

    return TypeSerializer().serialize(exact(value))


VALUES = [
    "",
    "text with ünïcode",
    _Status.DONE,
    True,
    False,
    0,
    -7,
    10**37,
    -(10**37),
    1.5,
    1e-7,
    1764780000.123456,
    -0.0,
    Decimal("3.14"),
    None,
    [],
    (1, "a"),
    {},
    {"a": 1, "b": [1.25, None, {"c": "d"}], "e": True},
    b"bytes",
    Binary(b"\x00\x01"),
    {"x", "y"},
    {1, 2},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_is_written_as_boto3_writes_it(value: Any) -> None:
    assert items.to_value(value) == _boto3(value)


@pytest.mark.parametrize("value", [10**38, -(10**40), float("nan"), float("inf")], ids=repr)
def test_what_dynamodb_cannot_hold_is_refused_as_boto3_refuses_it(value: Any) -> None:
    with pytest.raises(Exception) as ours:  # noqa: PT011 - the same exception as boto3's
        items.to_value(value)
    with pytest.raises(type(ours.value)):
        _boto3(value)


def test_a_record_leaves_out_its_none_attributes_and_reads_back_the_same() -> None:
    record = {
        "order_id": "o-1",
        "status": "PROCESSING",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_cents": 150}],
        "accepted_at": 1764780000.5,
        "reason": None,
        "reserved": True,
    }
    item = items.to_item(record)
    assert "reason" not in item
    assert items.from_item(item) == {k: v for k, v in record.items() if v is not None}
