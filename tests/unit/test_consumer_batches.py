"""How the consumer's pollers batch a steady trickle of messages (a queue stand-in that
answers at once with what has arrived, as a long poll does)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from order_common import contract
from order_processor import consumer, workflow

IDLE_POLL = 0.05
"""How long a receive from the drained queue waits before it answers empty (a long poll's
WaitTimeSeconds, shortened)."""


class TrickleQueue:
    """Messages arrive one every `interval` seconds; a receive waits for the first, then takes
    up to its maximum of what has arrived."""

    def __init__(self, count: int, interval: float) -> None:
        self.count, self.interval = count, interval
        self.started = time.monotonic()
        self.taken = 0
        self.batches: list[int] = []

    def _arrived(self) -> int:
        return min(self.count, int((time.monotonic() - self.started) / self.interval) + 1)

    async def receive_message(self, **params: Any) -> dict[str, Any]:
        while self._arrived() <= self.taken:
            if self.taken >= self.count:
                await asyncio.sleep(IDLE_POLL)  # drained: a long poll that ends empty
                return {}
            await asyncio.sleep(self.interval / 10)
        batch = range(self.taken, min(self._arrived(), self.taken + params["MaxNumberOfMessages"]))
        self.taken += len(batch)
        self.batches.append(len(batch))
        return {"Messages": [_message(i) for i in batch]}

    async def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in params["Entries"]], "Failed": []}


def _message(i: int) -> dict[str, Any]:
    order = contract.OrderMessage(
        order_id=f"order-{i}",
        client_id="demo",
        customer_id="customer",
        items=(contract.OrderItem(sku="SKU-0001", quantity=1),),
        currency="USD",
        payment_token="tok",
        accepted_at=time.time(),
    )
    return {"MessageId": str(i), "ReceiptHandle": f"handle-{i}", "Body": order.model_dump_json()}


class QuickWorkflow:
    """Takes a few milliseconds per batch, as the real steps do, and acknowledges everything."""

    async def run_batch(
        self, deliveries: Sequence[workflow.Delivery], *, max_receive_count: int
    ) -> list[workflow.Disposition]:
        await asyncio.sleep(0.005)
        return [workflow.Disposition.ACK] * len(deliveries)


def _consumer(queue: TrickleQueue, *, concurrency: int, linger: float) -> consumer.Consumer:
    return consumer.Consumer(
        client=queue,  # type: ignore[arg-type]
        hot=queue,  # type: ignore[arg-type]
        queue=consumer.QueueInfo("q", None, max_receive_count=5, visibility_timeout=30),
        order_workflow=QuickWorkflow(),  # type: ignore[arg-type]
        concurrency=concurrency,
        receive_linger=linger,
    )


async def _batches(linger: float) -> list[int]:
    queue = TrickleQueue(count=60, interval=0.004)
    worker = _consumer(queue, concurrency=20, linger=linger)  # one poller, two at most
    running = asyncio.create_task(worker.run(shutdown_grace=1))
    while worker.processed < queue.count:  # noqa: ASYNC110 - the consumer has no event for it
        await asyncio.sleep(0.01)
    worker.stop()
    await running
    return queue.batches


async def test_a_trickle_is_received_in_fuller_batches_when_pollers_linger() -> None:
    eager, lingering = await _batches(0.0), await _batches(0.03)
    assert sum(eager) == sum(lingering) == 60
    # Without the pause the pollers take messages nearly one by one; with it, several
    # arrive while a poller waits, and its next receive takes them together.
    assert len(lingering) <= len(eager) / 2, (eager, lingering)


async def _pollers_over_time(queue: TrickleQueue, *, concurrency: int) -> list[int]:
    """How many pollers ran, sampled every few milliseconds until every message was processed
    and for a moment after."""
    worker = _consumer(queue, concurrency=concurrency, linger=0.02)
    running = asyncio.create_task(worker.run(shutdown_grace=1))
    seen = []
    while worker.processed < queue.count:
        seen.append(worker.pollers)
        await asyncio.sleep(0.002)
    await asyncio.sleep(3 * IDLE_POLL)  # the last receives come back empty
    seen.append(worker.pollers)
    worker.stop()
    await running
    assert worker.pollers == 0
    return seen


async def test_a_backlog_adds_pollers_up_to_the_concurrency_and_they_stop_once_it_is_gone() -> None:
    backlog = TrickleQueue(count=400, interval=1e-6)  # all waiting at once
    seen = await _pollers_over_time(backlog, concurrency=80)
    assert max(seen) == 8, seen  # 80 in flight in batches of 10
    assert seen[-1] == 4, seen  # half of them wait for what comes next
    assert set(backlog.batches) == {10}, backlog.batches


async def test_a_trickle_keeps_the_fewest_pollers() -> None:
    trickle = TrickleQueue(count=30, interval=0.01)  # a receive takes a few at most
    seen = await _pollers_over_time(trickle, concurrency=80)
    assert max(seen) == 4, seen
