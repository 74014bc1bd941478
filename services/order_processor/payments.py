"""Payment through a `PaymentGateway`; the local simulator keeps an idempotent ledger.

Charges are keyed by order id, as real gateways key them by an idempotency key, so a
redelivered message can ask again and never be charged twice.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from order_common import items

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

DECLINE_PREFIX = "tok_decline"
TRANSIENT_PREFIX = "tok_transient"
UNAVAILABLE_PREFIX = "tok_unavailable"
SLOW_PREFIX = "tok_slow"
SLOW_SECONDS = 4.0
TRANSIENT_FAILURES_BEFORE_SUCCESS = 2


@dataclass(frozen=True)
class Approved:
    payment_id: str


@dataclass(frozen=True)
class Declined:
    reason: str


class TransientPaymentError(Exception):
    """The gateway could not decide now; asking again later may succeed."""


class PaymentGateway(Protocol):
    async def charge(
        self, *, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Approved | Declined: ...


@dataclass
class SimulatedPaymentGateway:
    """Local stand-in for a card processor.

    Tokens starting `tok_decline` are declined, `tok_transient` fail transiently twice per
    order (per process) and then succeed, `tok_unavailable` always fail transiently,
    `tok_slow` take a few seconds (slow work outliving a short visibility timeout); any other
    token is approved. Approvals are recorded once per order in the ledger table.
    """

    client: DynamoDBClient
    ledger_table: str
    _transient_failures: collections.Counter[str] = field(default_factory=collections.Counter)

    async def charge(
        self, *, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Approved | Declined:
        if token.startswith(DECLINE_PREFIX):
            return Declined("payment declined by the card issuer")
        if token.startswith(UNAVAILABLE_PREFIX):
            raise TransientPaymentError("payment gateway unavailable")
        if token.startswith(SLOW_PREFIX):
            await asyncio.sleep(SLOW_SECONDS)
        if token.startswith(TRANSIENT_PREFIX):
            self._transient_failures[order_id] += 1
            if self._transient_failures[order_id] <= TRANSIENT_FAILURES_BEFORE_SUCCESS:
                raise TransientPaymentError("payment gateway timed out")
        charge = {
            "order_id": order_id,
            "payment_id": f"pay_{uuid.uuid4().hex}",
            "amount_cents": amount_cents,
            "currency": currency,
            "charged_at": time.time(),
        }
        try:
            await self.client.put_item(
                TableName=self.ledger_table,
                Item=items.to_item(charge),
                ConditionExpression="attribute_not_exists(order_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            existing = await self.client.get_item(
                TableName=self.ledger_table,
                Key={"order_id": {"S": order_id}},
                ConsistentRead=True,
            )
            return Approved(payment_id=existing["Item"]["payment_id"]["S"])
        return Approved(payment_id=str(charge["payment_id"]))
