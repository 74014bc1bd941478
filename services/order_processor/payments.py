"""Payment through a `PaymentGateway`; the local simulator keeps an idempotent ledger.

Charges are keyed by order id, as real gateways key them by an idempotency key, so a
redelivered message can ask again and never be charged twice: the payment id derives from the
order id, and asking again rewrites the same ledger entry.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict, cast

from order_common import aws, items, tracing

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import WriteRequestTypeDef

DECLINE_PREFIX = "tok_decline"
TRANSIENT_PREFIX = "tok_transient"
UNAVAILABLE_PREFIX = "tok_unavailable"
SLOW_PREFIX = "tok_slow"
SLOW_SECONDS = 4.0
TRANSIENT_FAILURES_BEFORE_SUCCESS = 2
_PAYMENT_NAMESPACE = uuid.UUID("5f0c2b9e-6a8f-4b8e-9d51-3c1f2a7d9e40")
_MAX_BATCH_WRITE_ITEMS = 25  # DynamoDB's limit per BatchWriteItem
_UNPROCESSED_ATTEMPTS = 5


@dataclass(frozen=True)
class Approved:
    payment_id: str


@dataclass(frozen=True)
class Declined:
    reason: str


class TransientPaymentError(Exception):
    """The gateway could not decide now; asking again later may succeed."""


class LedgerEntry(TypedDict):
    """The simulated gateway's ledger item for an order's charge."""

    order_id: str
    payment_id: str
    amount_cents: int
    currency: str
    charged_at: float
    refunded_at: NotRequired[float]
    """Set once, with refund_reason, by the refund."""
    refund_reason: NotRequired[str]


@dataclass(frozen=True)
class Charge:
    """A charge the gateway made for an order, as it reports it afterwards."""

    payment_id: str
    amount_cents: int
    refunded: bool


class PaymentGateway(Protocol):
    """A card processor. Charges are keyed by order id (the gateway's idempotency key)."""

    async def charge(
        self, *, order_id: str, amount_cents: int, currency: str, token: str
    ) -> Approved | Declined: ...

    async def find_charge(self, order_id: str) -> Charge | None:
        """The order's charge, if one was made (a resumed order must not be decided again)."""
        ...

    async def refund(self, *, order_id: str, reason: str) -> bool:
        """Refund the order's charge in full; True if this call refunded it, False if it was
        refunded before. Safe to repeat."""
        ...


@dataclass
class SimulatedPaymentGateway:
    """Local stand-in for a card processor.

    Tokens starting `tok_decline` are declined, `tok_transient` fail transiently twice per
    order (per process) and then succeed, `tok_unavailable` always fail transiently,
    `tok_slow` take a few seconds (slow work outliving a short visibility timeout); any other
    token is approved. Approvals are recorded once per order in the ledger table.
    """

    client: aws.DynamoDbHotPath
    ledger_table: str
    _transient_failures: collections.Counter[str] = field(default_factory=collections.Counter)
    _writer: _LedgerWriter | None = None

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
        payment_id = f"pay_{uuid.uuid5(_PAYMENT_NAMESPACE, order_id).hex}"
        charge: LedgerEntry = {
            "order_id": order_id,
            "payment_id": payment_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "charged_at": time.time(),
        }
        await self._ledger_writer().put(items.to_item(charge))
        return Approved(payment_id=payment_id)

    async def find_charge(self, order_id: str) -> Charge | None:
        response = await self.client.get_item(
            TableName=self.ledger_table, Key={"order_id": {"S": order_id}}, ConsistentRead=True
        )
        if "Item" not in response:
            return None
        # The gateway alone writes its ledger: the entry is trusted, not validated.
        entry = cast("LedgerEntry", items.from_item(response["Item"]))
        return Charge(
            payment_id=entry["payment_id"],
            amount_cents=entry["amount_cents"],
            refunded="refunded_at" in entry,
        )

    async def refund(self, *, order_id: str, reason: str) -> bool:
        try:
            await self.client.update_item(
                TableName=self.ledger_table,
                Key={"order_id": {"S": order_id}},
                UpdateExpression="SET refunded_at = :now, refund_reason = :reason",
                ConditionExpression=(
                    "attribute_exists(order_id) AND attribute_not_exists(refunded_at)"
                ),
                ExpressionAttributeValues={
                    ":now": items.to_value(time.time()),
                    ":reason": {"S": reason[:1000]},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _ledger_writer(self) -> _LedgerWriter:
        if self._writer is None:
            self._writer = _LedgerWriter(self.client, self.ledger_table)
        return self._writer


@dataclass
class _LedgerWriter:
    """Writes the ledger entries of the charges made in one event-loop turn with one
    BatchWriteItem: a receive batch's orders are charged together, so their entries share a
    request instead of taking one each. The call is traced under the first order's span and
    links to each order's (`tracing.across`)."""

    client: aws.DynamoDbHotPath
    table: str
    _pending: list[_Entry] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def put(self, item: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Entry(item, written, tracing.current()))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # after every charge started in this turn has queued
        await written

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), _MAX_BATCH_WRITE_ITEMS):
            task = asyncio.get_running_loop().create_task(
                self._write(pending[start : start + _MAX_BATCH_WRITE_ITEMS])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[_Entry]) -> None:
        requests: list[WriteRequestTypeDef] = [{"PutRequest": {"Item": e.item}} for e in batch]
        try:
            for attempt in range(_UNPROCESSED_ATTEMPTS):
                with tracing.across(e.trace for e in batch):
                    response = await self.client.batch_write_item(
                        RequestItems={self.table: requests}
                    )
                unprocessed = response.get("UnprocessedItems", {}).get(self.table, [])
                requests = cast("list[WriteRequestTypeDef]", unprocessed)  # same shape, back in
                if not requests:
                    break
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # throttled: back off
            else:
                raise TransientPaymentError(f"{len(requests)} ledger writes left unprocessed")
        except Exception as exc:  # the charges are not recorded: each caller retries
            for entry in batch:
                if not entry.written.done():
                    entry.written.set_exception(exc)
            return
        for entry in batch:
            if not entry.written.done():
                entry.written.set_result(None)


@dataclass(frozen=True)
class _Entry:
    """One charge's ledger entry waiting for its BatchWriteItem."""

    item: dict[str, Any]
    written: asyncio.Future[None]
    trace: tracing.Span | None
    """The span of the order being charged, which the write links to."""
