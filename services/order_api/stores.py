"""The API's DynamoDB adapter: order reads, cancellation, idempotency records, counting
windows (the rate limit, failed token requests)."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from order_api import metrics
from order_common import contract, items, records

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailableError(Exception):
    """DynamoDB could not be reached or failed; the API answers 503."""


def _unavailable_on_error(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except StoreUnavailableError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class OrderReader:
    client: DynamoDBClient
    table: str

    @_unavailable_on_error
    async def get(self, order_id: str) -> records.OrderRecord | None:
        response = await self.client.get_item(
            TableName=self.table, Key={"order_id": {"S": order_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return records.order_record(item) if item else None

    @_unavailable_on_error
    async def cancel(
        self, order_id: str, *, client_id: str, now: float
    ) -> records.OrderRecord | None:
        """Record CANCELLED if processing has not started; else return the order as it stands.

        Processing starts with the processor's own conditional create of the record, so
        "no record yet" is exactly "not started": DynamoDB decides the race.
        """
        record: records.OrderRecord = {
            "order_id": order_id,
            "status": contract.OrderStatus.CANCELLED.value,
            "client_id": client_id,
            "reason": "cancelled by the client before processing started",
            "updated_at": now,
            "finished_at": now,
        }
        try:
            await self.client.put_item(
                TableName=self.table,
                Item=items.to_item(record),
                ConditionExpression="attribute_not_exists(order_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return await self.get(order_id)
        return None

    @_unavailable_on_error
    async def ping(self) -> None:
        await self.client.describe_table(TableName=self.table)


class IdempotencyOutcome(enum.Enum):
    STARTED = "started"
    REPLAY = "replay"
    MISMATCH = "mismatch"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True)
class IdempotencyResult:
    outcome: IdempotencyOutcome
    order_id: str | None = None
    """For STARTED: the order id to send. A key keeps its first order id for its lifetime, so a
    retry after an uncertain send re-sends the same order, which the processor's conditional
    writes apply once."""
    response: dict[str, Any] | None = None
    fresh: bool = True
    """For STARTED: the key was new. False when it was claimed after an earlier request that
    may have queued its order: then the key must never be freed, only released."""


@dataclass(frozen=True)
class IdempotencyStore:
    """Conditional records keyed by (client, Idempotency-Key), as in the IETF draft."""

    client: DynamoDBClient
    table: str
    ttl_seconds: int
    in_progress_seconds: int

    @_unavailable_on_error
    async def begin(
        self, key: str, payload_hash: str, *, order_id: str, now: float
    ) -> IdempotencyResult:
        """Claim the key for this request. `order_id` is used only if the key is new (or
        expired); a claim of an abandoned or released key keeps the order id it had."""
        record = {
            "key": key,
            "status": "IN_PROGRESS",
            "payload_hash": payload_hash,
            "order_id": order_id,
            "in_progress_until": int(now) + self.in_progress_seconds,
            "expires_at": int(now) + self.ttl_seconds,
        }
        try:
            await self.client.put_item(
                TableName=self.table,
                Item=items.to_item(record),
                # A key is new when absent or expired (TTL deletion is lazy).
                ConditionExpression="attribute_not_exists(#k) OR expires_at < :now",
                ExpressionAttributeNames={"#k": "key"},
                ExpressionAttributeValues={":now": items.to_value(int(now))},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            existing = await self._get(key)
            if existing is None:  # expired and deleted between our write and read
                return await self.begin(key, payload_hash, order_id=order_id, now=now)
            if existing["payload_hash"] != payload_hash:
                return IdempotencyResult(IdempotencyOutcome.MISMATCH)
            if existing["status"] == "COMPLETED":
                return IdempotencyResult(
                    IdempotencyOutcome.REPLAY, response=json.loads(existing["response"])
                )
            if existing["in_progress_until"] >= int(now):
                return IdempotencyResult(IdempotencyOutcome.IN_FLIGHT)
            return await self._take_over(existing, order_id=order_id, now=now)
        return IdempotencyResult(IdempotencyOutcome.STARTED, order_id=order_id)

    async def _take_over(
        self, existing: dict[str, Any], *, order_id: str, now: float
    ) -> IdempotencyResult:
        """Claim a key whose request died or gave up, keeping its order id."""
        try:
            await self.client.update_item(
                TableName=self.table,
                Key={"key": {"S": existing["key"]}},
                UpdateExpression=(
                    "SET in_progress_until = :until, order_id = if_not_exists(order_id, :fresh)"
                ),
                ConditionExpression="#s = :in_progress AND in_progress_until = :seen",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":until": items.to_value(int(now) + self.in_progress_seconds),
                    ":in_progress": {"S": "IN_PROGRESS"},
                    ":seen": items.to_value(existing["in_progress_until"]),
                    ":fresh": {"S": order_id},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return IdempotencyResult(IdempotencyOutcome.IN_FLIGHT)  # another retry won
        return IdempotencyResult(
            IdempotencyOutcome.STARTED, order_id=existing.get("order_id", order_id), fresh=False
        )

    @_unavailable_on_error
    async def complete(self, key: str, response: dict[str, Any]) -> None:
        await self.client.update_item(
            TableName=self.table,
            Key={"key": {"S": key}},
            UpdateExpression="SET #s = :completed, #r = :response",
            ExpressionAttributeNames={"#s": "status", "#r": "response"},
            ExpressionAttributeValues={
                ":completed": {"S": "COMPLETED"},
                ":response": {"S": json.dumps(response)},
            },
        )

    @_unavailable_on_error
    async def abandon(self, key: str) -> None:
        """Free the key after a send the queue refused: nothing was accepted under it."""
        await self.client.delete_item(TableName=self.table, Key={"key": {"S": key}})

    @_unavailable_on_error
    async def release(self, key: str) -> None:
        """Let a retry claim the key at once after an uncertain send, keeping its body hash
        and order id: the retry re-sends the same order."""
        await self.client.update_item(
            TableName=self.table,
            Key={"key": {"S": key}},
            UpdateExpression="SET in_progress_until = :past",
            ConditionExpression="#s = :in_progress",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":past": {"N": "0"}, ":in_progress": {"S": "IN_PROGRESS"}},
        )

    async def _get(self, key: str) -> dict[str, Any] | None:
        response = await self.client.get_item(
            TableName=self.table, Key={"key": {"S": key}}, ConsistentRead=True
        )
        item = response.get("Item")
        return items.from_item(item) if item else None


@dataclass(frozen=True)
class CountingWindows:
    """Counts per subject and fixed window, shared by every replica: one item per subject and
    window, keyed `<counts>:<subject>:<window start>`.

    They share the idempotency table (its TTL deletes them). Idempotency records are keyed
    `<client id>#<key>`: only a client whose configured id starts with a window's prefix could
    name one of these, and client ids are set by the operator, not by clients.
    """

    client: DynamoDBClient
    table: str
    window_seconds: int
    counts: str
    """What is counted (`rate-limit`, `token-failures-client`, ...): the key's prefix and the
    writes metric's `limit` label."""

    def _key(self, subject: str, window_start: int) -> dict[str, Any]:
        return {"key": {"S": f"{self.counts}:{subject}:{window_start}"}}

    @_unavailable_on_error
    async def take(self, subject: str, *, window_start: int, count: int, limit: int) -> int:
        """Add up to `count` to the window's count without passing `limit`; return how many
        were added.

        One conditional ADD, all or nothing; when fewer than `count` are left, the failed
        condition returns the count as it stands and the rest is taken instead.
        """
        writes = metrics.RATE_LIMIT_WRITES
        # Kept one window after its end: clocks of replicas differ a little.
        expires_at = window_start + 2 * self.window_seconds
        while count > 0:
            try:
                await self.client.update_item(
                    TableName=self.table,
                    Key=self._key(subject, window_start),
                    UpdateExpression="ADD taken :count SET expires_at = :expires",
                    ConditionExpression="attribute_not_exists(taken) OR taken <= :ceiling",
                    ExpressionAttributeValues={
                        ":count": items.to_value(count),
                        ":ceiling": items.to_value(limit - count),
                        ":expires": items.to_value(expires_at),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except self.client.exceptions.ConditionalCheckFailedException as exc:
                writes.labels(self.counts, "short").inc()
                # Without the item (an engine that does not return it) the window counts as spent.
                found = exc.response.get("Item")
                taken = items.from_item(found).get("taken", 0) if isinstance(found, dict) else limit
                count = min(count, limit - int(taken))
                continue
            writes.labels(self.counts, "taken").inc()
            return count
        return 0

    @_unavailable_on_error
    async def give_back(self, subject: str, *, window_start: int, count: int) -> None:
        """Return `count` taken from the window (an attempt that turned out not to count)."""
        try:
            await self.client.update_item(
                TableName=self.table,
                Key=self._key(subject, window_start),
                UpdateExpression="ADD taken :count",
                # Never create a window without its expiry; one already expired needs nothing.
                ConditionExpression="attribute_exists(taken)",
                ExpressionAttributeValues={":count": items.to_value(-count)},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return
        metrics.RATE_LIMIT_WRITES.labels(self.counts, "given_back").inc()
