"""The queue message contract and the request schema."""

from __future__ import annotations

import pydantic
import pytest

from order_api import schemas
from order_common import contract


def _order(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "customer_id": "c1",
        "items": [{"sku": "SKU-MUG", "quantity": 2}],
        "currency": "USD",
        "payment_token": "tok_ok",
    }
    body.update(overrides)
    return body


def test_message_round_trips() -> None:
    message = contract.OrderMessage(
        order_id="ord_1",
        client_id="demo",
        customer_id="c1",
        items=(contract.OrderItem(sku="SKU-MUG", quantity=2),),
        currency="USD",
        payment_token="tok",
        accepted_at=1.5,
    )
    assert contract.decode_message(contract.encode_message(message)) == message


@pytest.mark.parametrize(
    "body",
    ["", "not json", '{"schema_version": 2}', '{"order_id": 1}', "[]"],
)
def test_malformed_messages_raise_validation_error(body: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        contract.decode_message(body)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"items": []}, "at least 1"),
        ({"items": [{"sku": f"SKU-{i}", "quantity": 1} for i in range(101)]}, "at most 100"),
        ({"items": [{"sku": "SKU-MUG", "quantity": 0}]}, "greater than 0"),
        ({"items": [{"sku": "SKU-MUG", "quantity": 1001}]}, "less than or equal to 1000"),
        ({"items": [{"sku": "bad sku!", "quantity": 1}]}, "pattern"),
        ({"items": [{"sku": "SKU-MUG", "quantity": "2"}]}, "valid integer"),
        ({"currency": "EUR"}, "USD"),
        ({"surprise": 1}, "Extra inputs"),
        (
            {"items": [{"sku": "SKU-MUG", "quantity": 1}, {"sku": "SKU-MUG", "quantity": 2}]},
            "more than once",
        ),
    ],
)
def test_invalid_orders_are_refused_with_a_reason(
    overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment):
        schemas.OrderCreate.model_validate_json(
            pydantic.TypeAdapter(dict).dump_json(_order(**overrides))
        )


def test_final_statuses() -> None:
    assert contract.OrderStatus.COMPLETED.is_final
    assert contract.OrderStatus.CANCELLED.is_final
    assert not contract.OrderStatus.PROCESSING.is_final
    assert not contract.OrderStatus.QUEUED.is_final
