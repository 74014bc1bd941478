"""The processor's DynamoDB adapter: catalog, reservations, order state, velocity.

Every state change is a conditional write, so a redelivered message can neither apply an
effect twice nor move an order backwards:
- the order record is created by the same transaction that reserves its stock;
- a final status is written only from PROCESSING, and a rejection or failure releases the
  stock in that same transaction.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from order_common import contract, items
from order_common import settings as common_settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef

_CONFLICT_ATTEMPTS = 8


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def as_record(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "line_total_cents": self.line_total_cents,
        }


class ReserveOutcome(enum.Enum):
    RESERVED = "reserved"
    ALREADY_RECORDED = "already_recorded"
    OUT_OF_STOCK = "out_of_stock"


@dataclass(frozen=True)
class ReserveResult:
    outcome: ReserveOutcome
    existing: dict[str, Any] | None = None
    short_sku: str | None = None


@dataclass
class ProcessorStore:
    client: DynamoDBClient
    settings: common_settings.AwsSettings
    catalog_cache_seconds: float
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
        for start in range(0, len(missing), 100):  # BatchGetItem takes at most 100 keys
            keys: list[dict[str, Any]] = [{"sku": {"S": s}} for s in missing[start : start + 100]]
            while keys:
                response = await self.client.batch_get_item(
                    RequestItems={
                        self.settings.catalog_table: {
                            "Keys": keys,
                            "ProjectionExpression": "sku, price_cents",
                        }
                    }
                )
                for raw in response["Responses"].get(self.settings.catalog_table, []):
                    entry = items.from_item(raw)
                    self._prices[entry["sku"]] = (now, int(entry["price_cents"]))
                unprocessed = response.get("UnprocessedKeys", {}).get(self.settings.catalog_table)
                keys = list(unprocessed["Keys"]) if unprocessed else []
        return {s: self._prices[s][1] for s in wanted if s in self._prices}

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        response = await self.client.get_item(
            TableName=self.settings.orders_table,
            Key={"order_id": {"S": order_id}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return items.from_item(item) if item else None

    async def reserve(
        self, message: contract.OrderMessage, lines: Sequence[PricedLine], *, now: float
    ) -> ReserveResult:
        """Create the order as PROCESSING and take its stock, all or nothing."""
        record = {
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
        operations: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.settings.orders_table,
                    "Item": items.to_item(record),
                    "ConditionExpression": "attribute_not_exists(order_id)",
                }
            },
            *self._stock_updates(lines, sign=-1),
        ]
        reasons = await self._transact(operations)
        if reasons is None:
            return ReserveResult(ReserveOutcome.RESERVED)
        if reasons[0] == "ConditionalCheckFailed":
            return ReserveResult(
                ReserveOutcome.ALREADY_RECORDED, existing=await self.get_order(message.order_id)
            )
        short = next(i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed")
        return ReserveResult(ReserveOutcome.OUT_OF_STOCK, short_sku=lines[short - 1].sku)

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
        record = {
            "order_id": message.order_id,
            "status": status.value,
            "client_id": message.client_id,
            "customer_id": message.customer_id,
            "currency": message.currency,
            "items": [line.as_record() for line in lines] or None,
            "total_cents": sum(line.line_total_cents for line in lines) if lines else None,
            "reason": reason,
            "accepted_at": message.accepted_at,
            "updated_at": now,
            "finished_at": now,
        }
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
        updates = {"#s": ":status", "updated_at": ":now", "finished_at": ":now"}
        values: dict[str, Any] = {
            ":status": status.value,
            ":now": now,
            ":processing": contract.OrderStatus.PROCESSING.value,
        }
        for name, value in (
            ("reason", reason),
            ("payment_id", payment_id),
            ("fraud_score", fraud_score),
        ):
            if value is not None:
                updates[name] = f":{name}"
                values[f":{name}"] = value
        if release:
            updates["reserved"] = ":released"
            values[":released"] = False
        order_update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self.settings.orders_table,
                "Key": {"order_id": {"S": order_id}},
                "UpdateExpression": "SET " + ", ".join(f"{k} = {v}" for k, v in updates.items()),
                "ConditionExpression": "#s = :processing"
                + (" AND reserved = :reserved" if release else ""),
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {k: items.to_value(v) for k, v in values.items()}
                | ({":reserved": {"BOOL": True}} if release else {}),
            }
        }
        reasons = await self._transact([order_update, *self._stock_updates(release, sign=+1)])
        return reasons is None

    async def record_velocity(
        self, customer_id: str, order_id: str, *, window_seconds: int, now: float
    ) -> int:
        """This customer's orders in the last `window_seconds`, this one included.

        One item per customer holds a set of order ids per fixed window; the count weighs the
        previous window by how much of it still overlaps (a sliding-window estimate), so a burst
        straddling a window boundary is still seen. Sets make a redelivery add nothing.
        """
        current = int(now) // window_seconds * window_seconds
        stale = [f"w{current - k * window_seconds}" for k in range(2, 6)]
        response = await self.client.update_item(
            TableName=self.settings.velocity_table,
            Key={"customer_id": {"S": customer_id}},
            UpdateExpression=f"ADD w{current} :order SET expires_at = :expires REMOVE "
            + ", ".join(stale),
            ExpressionAttributeValues={
                ":order": {"SS": [order_id]},
                ":expires": {"N": str(current + 2 * window_seconds)},
            },
            ReturnValues="ALL_NEW",
        )
        attributes = response["Attributes"]
        in_current = len(attributes[f"w{current}"]["SS"])
        previous = attributes.get(f"w{current - window_seconds}")
        in_previous = len(previous["SS"]) if previous and "SS" in previous else 0
        overlap = 1 - (now - current) / window_seconds
        return in_current + math.ceil(in_previous * overlap)

    def _stock_updates(
        self, lines: Sequence[PricedLine], *, sign: int
    ) -> list[TransactWriteItemTypeDef]:
        updates: list[TransactWriteItemTypeDef] = []
        for line in lines:
            values: dict[str, Any] = {":delta": {"N": str(sign * line.quantity)}}
            update: TransactWriteItemTypeDef = {
                "Update": {
                    "TableName": self.settings.catalog_table,
                    "Key": {"sku": {"S": line.sku}},
                    "UpdateExpression": "ADD stock :delta",
                    "ExpressionAttributeValues": values,
                }
            }
            if sign < 0:  # taking stock: never below zero
                update["Update"]["ConditionExpression"] = "stock >= :quantity"
                values[":quantity"] = {"N": str(line.quantity)}
            updates.append(update)
        return updates

    async def _transact(self, operations: list[TransactWriteItemTypeDef]) -> list[str] | None:
        """Run a transaction; None on success, else the per-operation cancellation codes.

        Conflicts with concurrent transactions on the same items are retried here.
        """
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                await self.client.transact_write_items(TransactItems=operations)
            except self.client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes:
                    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                return codes
            except self.client.exceptions.TransactionConflictException:
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            return None
        raise TransactionContendedError(
            f"transaction still conflicting after {_CONFLICT_ATTEMPTS} attempts"
        )


class TransactionContendedError(Exception):
    """Too many concurrent transactions on the same items; the message is retried later."""
