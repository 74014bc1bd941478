"""DynamoDB attribute-value (de)serialization for the low-level clients.

Writing goes through boto3's `TypeSerializer` except for the plain values the services' own
records hold (str, bool, int, finite float, and dicts and lists of them), which are encoded
directly to the same attribute values at a tenth of the serializer's cost: the processor writes
several records per order (docs/performance.md). A test holds both to the same output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb import types as dynamodb_types

_serializer = dynamodb_types.TypeSerializer()
_deserializer = dynamodb_types.TypeDeserializer()
_MAX_PLAIN_INT = 10**38  # DynamoDB numbers hold 38 digits; beyond, boto3's error is the one


def _plain(value: Any) -> Any:
    # Decimals from DynamoDB become int where they are whole, so callers see ordinary numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _dynamo_safe(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _dynamo_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_dynamo_safe(v) for v in value]
    return value


def to_value(value: Any) -> Any:
    """The attribute value of `value` (floats as exact decimal numbers)."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if kind is int and -_MAX_PLAIN_INT < value < _MAX_PLAIN_INT:
        return {"N": str(value)}
    if kind is float and math.isfinite(value):
        return {"N": str(Decimal(repr(value)))}
    if kind is dict and all(type(k) is str for k in value):
        return {"M": {k: to_value(v) for k, v in value.items()}}
    if kind is list or kind is tuple:
        return {"L": [to_value(v) for v in value]}
    if value is None:
        return {"NULL": True}
    return _serializer.serialize(_dynamo_safe(value))  # sets, bytes, Decimal, the unusual


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """An item from a record; attributes that are None are left out."""
    # Mapping: a TypedDict record is one, though not a dict[str, Any] to the type checker.
    return {k: to_value(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}
