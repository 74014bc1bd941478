"""The processor's DynamoDB adapter: catalog, reservations, order state, velocity.

Every state change is a conditional write, so a redelivered message can neither apply an
effect twice nor move an order backwards:
- the order record is created by the same transaction that reserves its stock and adds the
  order to its customer's velocity window (customers per client: `velocity.customer_key`);
- a final status is written only from PROCESSING, and a rejection or failure releases the
  stock in that same transaction.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from order_common import aws, contract, items, records, schema
from order_common import settings as common_settings
from order_processor import metrics, velocity

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import (
        KeysAndAttributesTypeDef,
        TransactWriteItemTypeDef,
    )

_CONFLICT_ATTEMPTS = 8
_CONDITION_FAILED = "ConditionalCheckFailed"
# Cancellations that say "not now" rather than "not so": tried again here.
_RETRYABLE_CANCELLATIONS = {"TransactionConflict", "ThrottlingError"}
_MAX_TRANSACTION_ACTIONS = 100  # DynamoDB's limit per TransactWriteItems
_MAX_BATCH_GET_KEYS = 100  # and per BatchGetItem


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def as_record(self) -> records.LineRecord:
        return {
            "sku": self.sku,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "line_total_cents": self.line_total_cents,
        }


@dataclass(frozen=True)
class Completion:
    """A paid order waiting for its COMPLETED write."""

    order_id: str
    payment_id: str
    fraud_score: int | None


class ReserveOutcome(enum.Enum):
    RESERVED = "reserved"
    ALREADY_RECORDED = "already_recorded"
    OUT_OF_STOCK = "out_of_stock"


@dataclass(frozen=True)
class ReserveResult:
    outcome: ReserveOutcome
    existing: records.OrderRecord | None = None
    short_sku: str | None = None


@dataclass
class ProcessorStore:
    client: aws.DynamoDbHotPath
    settings: common_settings.AwsSettings
    catalog_cache_seconds: float
    velocity_windows: velocity.Windows
    _prices: dict[str, tuple[float, int]] = field(default_factory=dict)

    async def prices(self, skus: Iterable[str]) -> dict[str, int]:
        """Unit prices in cents of the skus found in the catalog (unknown skus are absent)."""
        now = time.monotonic()
        wanted = set(skus)
        missing = [
            s
            for s in wanted
            if now - self._prices.get(s, (-1e9, 0))[0] > self.catalog_cache_seconds
        ]
        if missing:
            found = await self._batch_get(
                self.settings.catalog_table, "sku", missing, projection="sku, price_cents"
            )
            for sku, entry in found.items():
                self._prices[sku] = (now, int(entry["price_cents"]))
        return {s: self._prices[s][1] for s in wanted if s in self._prices}

    async def get_order(self, order_id: str) -> records.OrderRecord | None:
        response = await self.client.get_item(
            TableName=self.settings.orders_table,
            Key={"order_id": {"S": order_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return records.order_record(item) if item else None

    def _processing_put(
        self, message: contract.OrderMessage, lines: Sequence[PricedLine], *, now: float
    ) -> TransactWriteItemTypeDef:
        """The order's first record, created only if it does not exist yet."""
        record: records.OrderRecord = {
            "order_id": message.order_id,
            "status": contract.OrderStatus.PROCESSING.value,
            "client_id": message.client_id,
            "customer_id": message.customer_id,
            "currency": message.currency,
            "items": [line.as_record() for line in lines],
            "total_cents": sum(line.line_total_cents for line in lines),
            "accepted_at": message.accepted_at,
            "started_at": now,
            "updated_at": now,
            "reserved": True,
        }
        return {
            "Put": {
                "TableName": self.settings.orders_table,
                "Item": items.to_item(record),
                "ConditionExpression": "attribute_not_exists(order_id)",
            }
        }

    async def reserve(
        self, message: contract.OrderMessage, lines: Sequence[PricedLine], *, now: float
    ) -> ReserveResult:
        """Create the order as PROCESSING, take its stock and count it for velocity, all or
        nothing."""
        operations = [
            self._processing_put(message, lines, now=now),
            *(self._stock_update(line.sku, -line.quantity) for line in lines),
            self._velocity_update(_customer_key(message), [message.order_id], now=now),
        ]
        reasons = await self._transact(operations)
        if reasons is None:
            return ReserveResult(ReserveOutcome.RESERVED)
        if reasons[0] == _CONDITION_FAILED:
            return ReserveResult(
                ReserveOutcome.ALREADY_RECORDED, existing=await self.get_order(message.order_id)
            )
        stock_reasons = reasons[1 : 1 + len(lines)]
        if _CONDITION_FAILED in stock_reasons:
            short = lines[stock_reasons.index(_CONDITION_FAILED)]
            return ReserveResult(ReserveOutcome.OUT_OF_STOCK, short_sku=short.sku)
        raise TransactionNotAppliedError(reasons)

    async def reserve_together(
        self,
        orders: Sequence[tuple[contract.OrderMessage, Sequence[PricedLine]]],
        *,
        now: float,
    ) -> bool:
        """Reserve several fresh orders in one transaction: the common case, at a fraction of
        the requests. False when anything stands in the way (an order already recorded, a sku
        short, too many actions); the caller then reserves each order on its own, which says
        exactly which one and why.
        """
        # A transaction touches each item once: sum each sku and group each customer's orders.
        demand: dict[str, int] = {}
        by_customer: dict[str, list[str]] = {}
        for message, lines in orders:
            by_customer.setdefault(_customer_key(message), []).append(message.order_id)
            for line in lines:
                demand[line.sku] = demand.get(line.sku, 0) + line.quantity
        actions = len(orders) + len(demand) + len(by_customer)
        if len(orders) < 2 or actions > _MAX_TRANSACTION_ACTIONS:
            return False
        operations = [
            *(self._processing_put(message, lines, now=now) for message, lines in orders),
            *(self._stock_update(sku, -quantity) for sku, quantity in demand.items()),
            *(self._velocity_update(c, ids, now=now) for c, ids in by_customer.items()),
        ]
        return await self._transact(operations) is None

    async def complete_together(self, completions: Sequence[Completion], *, now: float) -> bool:
        """Move several PROCESSING orders to COMPLETED in one transaction; False (nothing
        written) if any of them is no longer PROCESSING: the caller then goes one by one."""
        if len(completions) < 2 or len(completions) > _MAX_TRANSACTION_ACTIONS:
            return False
        operations = [
            self._final_update(
                c.order_id,
                contract.OrderStatus.COMPLETED,
                now=now,
                payment_id=c.payment_id,
                fraud_score=c.fraud_score,
            )
            for c in completions
        ]
        return await self._transact(operations) is None

    async def record_unreserved(
        self,
        message: contract.OrderMessage,
        status: contract.OrderStatus,
        reason: str,
        *,
        now: float,
        lines: Sequence[PricedLine] = (),
    ) -> bool:
        """Record a final status for an order that never reserved stock (first write wins)."""
        record: records.OrderRecord = {
            "order_id": message.order_id,
            "status": status.value,
            "client_id": message.client_id,
            "customer_id": message.customer_id,
            "currency": message.currency,
            "reason": reason,
            "accepted_at": message.accepted_at,
            "updated_at": now,
            "finished_at": now,
        }
        if lines:  # an order refused before it was priced has no lines to record
            record["items"] = [line.as_record() for line in lines]
            record["total_cents"] = sum(line.line_total_cents for line in lines)
        try:
            await self.client.put_item(
                TableName=self.settings.orders_table,
                Item=items.to_item(record),
                ConditionExpression="attribute_not_exists(order_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    async def finish(
        self,
        order_id: str,
        status: contract.OrderStatus,
        *,
        now: float,
        reason: str | None = None,
        release: Sequence[PricedLine] = (),
        payment_id: str | None = None,
        fraud_score: int | None = None,
    ) -> bool:
        """Move PROCESSING to a final status; release the stock in the same transaction."""
        order_update = self._final_update(
            order_id,
            status,
            now=now,
            reason=reason,
            release=bool(release),
            payment_id=payment_id,
            fraud_score=fraud_score,
        )
        stock = [self._stock_update(line.sku, line.quantity) for line in release]
        reasons = await self._transact([order_update, *stock])
        if reasons is None:
            return True
        if reasons[0] == _CONDITION_FAILED:
            return False  # no longer PROCESSING (or its stock already given back): final
        raise TransactionNotAppliedError(reasons)

    def _final_update(
        self,
        order_id: str,
        status: contract.OrderStatus,
        *,
        now: float,
        reason: str | None = None,
        release: bool = False,
        payment_id: str | None = None,
        fraud_score: int | None = None,
    ) -> TransactWriteItemTypeDef:
        # The attributes a final status adds to the record (records.OrderRecord).
        updates = {"#s": ":status", "updated_at": ":now", "finished_at": ":now"}
        values: dict[str, Any] = {
            ":status": status.value,
            ":now": now,
            ":processing": contract.OrderStatus.PROCESSING.value,
        }
        optional = (("reason", reason), ("payment_id", payment_id), ("fraud_score", fraud_score))
        for name, value in optional:
            if value is not None:
                updates[name] = f":{name}"
                values[f":{name}"] = value
        condition = "#s = :processing"
        if release:  # only an order still holding its stock may give it back
            updates["reserved"] = ":released"
            values[":released"] = False
            values[":reserved"] = True
            condition += " AND reserved = :reserved"
        return {
            "Update": {
                "TableName": self.settings.orders_table,
                "Key": {"order_id": {"S": order_id}},
                "UpdateExpression": "SET " + ", ".join(f"{k} = {v}" for k, v in updates.items()),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {k: items.to_value(v) for k, v in values.items()},
            }
        }

    def _velocity_update(
        self, customer_key: str, order_ids: Sequence[str], *, now: float
    ) -> TransactWriteItemTypeDef:
        """Add orders to their customer's current window (sets: a redelivery adds nothing).

        One item per customer holds a set of order ids per fixed window; windows older than the
        previous one are dropped on the way.
        """
        windows = self.velocity_windows
        return {
            "Update": {
                "TableName": self.settings.velocity_table,
                "Key": {schema.VELOCITY.key: {"S": customer_key}},
                "UpdateExpression": f"ADD {windows.current(now)} :orders SET expires_at = :expires"
                f" REMOVE {', '.join(windows.stale(now))}",
                "ExpressionAttributeValues": {
                    ":orders": {"SS": list(order_ids)},
                    ":expires": {"N": str(windows.expires_at(now))},
                },
            }
        }

    async def recent_orders(
        self, messages: Sequence[contract.OrderMessage], *, now: float
    ) -> dict[str, int]:
        """Order id -> its customer's orders within the velocity window, that order included.

        One consistent BatchGetItem reads every customer's windows. The previous window counts
        by how much of it still overlaps (a sliding-window estimate), so a burst straddling a
        window boundary is still seen. A customer's orders in this batch count in arrival
        order: the first sees the history plus itself, the last sees them all.
        """
        windows = self.velocity_windows
        current, previous = windows.current(now), windows.previous(now)
        by_customer: dict[str, list[str]] = {}
        for message in messages:
            by_customer.setdefault(_customer_key(message), []).append(message.order_id)
        found = await self._batch_get(
            self.settings.velocity_table,
            schema.VELOCITY.key,
            by_customer,
            projection="#k, #c, #p",
            names={"#k": schema.VELOCITY.key, "#c": current, "#p": previous},
        )
        recent: dict[str, int] = {}
        for customer, order_ids in by_customer.items():
            item = found.get(customer, {})
            history = windows.estimate(
                len(item.get(current) or ()), len(item.get(previous) or ()), now
            )
            recent.update(velocity.in_arrival_order(history, order_ids))
        return recent

    async def _batch_get(
        self,
        table: str,
        key: str,
        wanted: Iterable[str],
        *,
        projection: str,
        names: dict[str, str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Key value -> item, read consistently, in as few BatchGetItem calls as allowed."""
        found: dict[str, dict[str, Any]] = {}
        wanted = list(wanted)
        for start in range(0, len(wanted), _MAX_BATCH_GET_KEYS):
            keys: list[dict[str, Any]] = [
                {key: {"S": value}} for value in wanted[start : start + _MAX_BATCH_GET_KEYS]
            ]
            while keys:
                request: KeysAndAttributesTypeDef = {
                    "Keys": keys,
                    "ProjectionExpression": projection,
                    "ConsistentRead": True,
                }
                if names:
                    request["ExpressionAttributeNames"] = names
                response = await self.client.batch_get_item(RequestItems={table: request})
                for raw in response["Responses"].get(table, []):
                    entry = items.from_item(raw)
                    found[entry[key]] = entry
                unprocessed = response.get("UnprocessedKeys", {}).get(table)
                keys = list(unprocessed["Keys"]) if unprocessed else []
        return found

    def _stock_update(self, sku: str, delta: int) -> TransactWriteItemTypeDef:
        values: dict[str, Any] = {":delta": {"N": str(delta)}}
        update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self.settings.catalog_table,
                "Key": {"sku": {"S": sku}},
                "UpdateExpression": "ADD stock :delta",
                "ExpressionAttributeValues": values,
            }
        }
        if delta < 0:  # taking stock: never below zero
            update["Update"]["ConditionExpression"] = "stock >= :quantity"
            values[":quantity"] = {"N": str(-delta)}
        return update

    async def _transact(self, operations: list[TransactWriteItemTypeDef]) -> list[str] | None:
        """Run a transaction; None on success, else the per-operation cancellation codes.

        Conflicts with concurrent transactions on the same items are retried here.
        """
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                await self.client.transact_write_items(TransactItems=operations)
            except self.client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if _CONDITION_FAILED not in codes and _RETRYABLE_CANCELLATIONS & set(codes):
                    metrics.TRANSACTION_CONFLICTS.inc()
                    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                return codes
            except self.client.exceptions.TransactionConflictException:
                metrics.TRANSACTION_CONFLICTS.inc()
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            return None
        raise TransactionContendedError(
            f"transaction still conflicting after {_CONFLICT_ATTEMPTS} attempts"
        )


def _customer_key(message: contract.OrderMessage) -> str:
    return velocity.customer_key(message.client_id, message.customer_id)


class TransactionContendedError(Exception):
    """Too many concurrent transactions on the same items; the message is retried later."""


class TransactionNotAppliedError(Exception):
    """A transaction was cancelled for a reason other than its conditions (throttling, an
    invalid request, a conflict that would not clear); nothing was written, so the message is
    retried rather than taken as done."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(f"transaction cancelled: {', '.join(reasons)}")
        self.reasons = list(reasons)
