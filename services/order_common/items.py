"""DynamoDB attribute-value (de)serialization for the low-level clients."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb import types as dynamodb_types

_serializer = dynamodb_types.TypeSerializer()
_deserializer = dynamodb_types.TypeDeserializer()


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


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_dynamo_safe(v)) for k, v in values.items() if v is not None}


def to_value(value: Any) -> Any:
    return _serializer.serialize(_dynamo_safe(value))


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}
