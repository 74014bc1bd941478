"""Request and response bodies of API version 1 (one model per direction)."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import pydantic

from order_common import contract

COMPONENT_REF = "#/components/schemas/{model}"


def openapi_components(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """`model` and the models it uses, as OpenAPI components named after their classes."""
    schema = model.model_json_schema(ref_template=COMPONENT_REF)
    return {**schema.pop("$defs", {}), model.__name__: schema}


class _Request(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class TokenRequest(_Request):
    client_id: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]
    client_secret: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)]


class TokenResponse(pydantic.BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class OrderCreate(_Request):
    customer_id: Annotated[
        str, pydantic.StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.@:-]+$")
    ]
    items: list[contract.OrderItem] = pydantic.Field(
        min_length=1, max_length=contract.MAX_ITEMS_PER_ORDER
    )
    currency: contract.Currency
    payment_token: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)]

    @pydantic.field_validator("items")
    @classmethod
    def _each_sku_once(cls, items: list[contract.OrderItem]) -> list[contract.OrderItem]:
        seen: set[str] = set()
        for item in items:
            if item.sku in seen:
                raise ValueError(f"sku {item.sku} is listed more than once; sum the quantities")
            seen.add(item.sku)
        return items


class OrderAccepted(pydantic.BaseModel):
    order_id: str
    status: contract.OrderStatus
    status_url: str
    accepted_at: datetime.datetime


class PricedItem(pydantic.BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int | None = None
    line_total_cents: int | None = None


class OrderView(pydantic.BaseModel):
    """An order as a client sees it; fields fill in as processing learns them."""

    order_id: str
    status: contract.OrderStatus
    customer_id: str | None = None
    currency: str | None = None
    items: list[PricedItem] | None = None
    total_cents: int | None = None
    reason: str | None = None
    accepted_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None


class FieldError(pydantic.BaseModel):
    """One invalid part of a request: where (`body.items.0.quantity`), what, and its kind."""

    field: str
    message: str
    type: str


# problems.problem_response writes these documents (as plain dicts, for speed); this model
# describes them in /openapi.json.
class Problem(pydantic.BaseModel):
    """Every error response: RFC 9457 problem details, sent as application/problem+json."""

    model_config = pydantic.ConfigDict(extra="allow", use_attribute_docstrings=True)

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    """400 and 422: each invalid part of the request."""
    order_id: str | None = None
    """503 when the queue did not confirm an order: the order that may have been accepted."""
    status_url: str | None = None
    """With `order_id`: where to follow that order."""
    checks: dict[str, str] | None = None
    """/readyz's 503: each dependency's state."""
