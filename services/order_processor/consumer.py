"""The SQS side of the processor: receive, dispatch, delete successes, extend, stop cleanly.

Several pollers long-poll at once (concurrency / batch size of them); each processes its batch
concurrently and deletes the successes in one DeleteMessageBatch. Failures are not deleted:
the visibility timeout brings them back and the queue's redrive policy moves them to the DLQ
after maxReceiveCount receives. A message that cannot be parsed is moved to the DLQ at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from order_common import aws, contract
from order_processor import metrics, workflow

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueInfo:
    url: str
    dlq_url: str | None
    max_receive_count: int
    visibility_timeout: int


async def describe_queue(client: SQSClient, queue_name: str) -> QueueInfo:
    """Find the queue, its DLQ and limits from the queue's own attributes (one source of truth)."""
    url = (await client.get_queue_url(QueueName=queue_name))["QueueUrl"]
    attributes = (
        await client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
        )
    )["Attributes"]
    dlq_url = None
    max_receive_count = 1_000_000
    if "RedrivePolicy" in attributes:
        policy = json.loads(attributes["RedrivePolicy"])
        max_receive_count = int(policy["maxReceiveCount"])
        dlq_name = str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1]
        dlq_url = (await client.get_queue_url(QueueName=dlq_name))["QueueUrl"]
    return QueueInfo(
        url=url,
        dlq_url=dlq_url,
        max_receive_count=max_receive_count,
        visibility_timeout=int(attributes.get("VisibilityTimeout", "30")),
    )


@dataclass
class _InFlight:
    receipt_handle: str
    received: float
    task: asyncio.Task[workflow.Disposition] | None = None


@dataclass
class Consumer:
    client: SQSClient
    hot: aws.SqsHotPath
    """Receive and delete, the calls made for every batch."""
    queue: QueueInfo
    order_workflow: workflow.OrderWorkflow
    concurrency: int
    batch_size: int = 10
    wait_time_seconds: int = 20
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: dict[str, _InFlight] = field(default_factory=dict)
    processed: int = 0
    retried: int = 0
    last_poll: float = field(default_factory=time.monotonic)
    """When a poll last completed (monotonic): the liveness signal."""

    @property
    def pollers(self) -> int:
        return max(1, math.ceil(self.concurrency / self.batch_size))

    def stop(self) -> None:
        """Stop receiving; in-flight messages finish (see `run`'s grace)."""
        self._stopping.set()

    async def run(self, *, shutdown_grace: float) -> None:
        heartbeat = asyncio.create_task(self._extend_visibility_forever())
        pollers = [asyncio.create_task(self._poll_forever(i)) for i in range(self.pollers)]
        await self._stopping.wait()
        log.info("stopping: %s messages in flight", len(self._in_flight))
        _, pending = await asyncio.wait(pollers, timeout=shutdown_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._release_unfinished()
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        log.info("stopped: %s processed, %s left for retry", self.processed, self.retried)

    async def _poll_forever(self, poller: int) -> None:
        while not self._stopping.is_set():
            receive = asyncio.create_task(
                self.hot.receive_message(
                    QueueUrl=self.queue.url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_time_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=["All"],
                )
            )
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not receive.done():
                # Stopping while long-polling: abandon the poll. A message it still receives
                # stays invisible until its timeout and is then redelivered, never lost.
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
                return
            try:
                response = receive.result()
            except Exception as exc:  # engine down or throttled: back off, keep polling
                log.warning("receive failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self.last_poll = time.monotonic()
            metrics.LAST_POLL.set_to_current_time()
            messages = response.get("Messages", [])
            metrics.RECEIVE_BATCH_SIZE.observe(len(messages))
            if messages:
                await self._handle_batch(messages)

    async def _handle_batch(self, messages: list[MessageTypeDef]) -> None:
        received = time.monotonic()
        for m in messages:
            self._in_flight[m["MessageId"]] = _InFlight(m["ReceiptHandle"], received)
        # Cancelled at shutdown, the entries stay in `_in_flight` for `_release_unfinished`.
        deliveries: list[tuple[MessageTypeDef, workflow.Delivery]] = []
        done: list[MessageTypeDef] = []
        for m in messages:
            try:
                order = contract.decode_message(m["Body"])
            except pydantic.ValidationError as exc:
                reason = f"unparseable message: {exc.error_count()} errors"
                if await self._dead_letter(m, reason):
                    done.append(m)
                continue
            receive_count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            request_attribute = m.get("MessageAttributes", {}).get("request_id")
            request_id = request_attribute.get("StringValue") if request_attribute else None
            deliveries.append((m, workflow.Delivery(order, receive_count, request_id)))
        if deliveries:
            started = time.perf_counter()
            metrics.IN_FLIGHT.inc(len(deliveries))
            try:
                dispositions = await self.order_workflow.run_batch(
                    [d for _, d in deliveries], max_receive_count=self.queue.max_receive_count
                )
            finally:
                metrics.IN_FLIGHT.dec(len(deliveries))
                elapsed = time.perf_counter() - started
                for _ in deliveries:  # each message of the batch took this long to its outcome
                    metrics.PROCESSING_DURATION.observe(elapsed)
            for (m, _), disposition in zip(deliveries, dispositions, strict=True):
                if disposition is workflow.Disposition.ACK:
                    self.processed += 1
                    done.append(m)
                else:
                    self.retried += 1
        if done:
            await self._delete(done)
        for m in messages:
            self._in_flight.pop(m["MessageId"], None)

    async def _dead_letter(self, message: MessageTypeDef, reason: str) -> bool:
        log.error("moving message %s to the DLQ: %s", message["MessageId"], reason)
        if self.queue.dlq_url is None:
            return False  # no DLQ configured: leave it to the visibility timeout
        try:
            await self.client.send_message(
                QueueUrl=self.queue.dlq_url,
                MessageBody=message["Body"],
                MessageAttributes={
                    "dead_letter_reason": {"DataType": "String", "StringValue": reason[:1000]},
                    "source_message_id": {
                        "DataType": "String",
                        "StringValue": message["MessageId"],
                    },
                },
            )
        except Exception as exc:  # not moved: keep it in the source queue for now
            log.warning("could not dead-letter %s: %s", message["MessageId"], exc)
            return False
        metrics.MESSAGES_DEAD_LETTERED.inc()
        return True

    async def _delete(self, messages: list[MessageTypeDef]) -> None:
        try:
            response = await self.hot.delete_message_batch(
                QueueUrl=self.queue.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        except Exception as exc:  # redelivered later, and the conditional writes make that harmless
            log.warning("DeleteMessageBatch failed: %s", exc)
            return
        for failure in response.get("Failed", []):
            log.warning("could not delete message: %s", failure.get("Message"))

    async def _extend_visibility_forever(self) -> None:
        """Keep slow messages invisible: extend any held for a third of the timeout."""
        timeout = self.queue.visibility_timeout
        period = max(1.0, timeout / 3)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            due = [f for f in self._in_flight.values() if now - f.received >= period]
            for start in range(0, len(due), 10):
                chunk = due[start : start + 10]
                try:
                    await self.client.change_message_visibility_batch(
                        QueueUrl=self.queue.url,
                        Entries=[
                            {
                                "Id": str(i),
                                "ReceiptHandle": f.receipt_handle,
                                "VisibilityTimeout": timeout,
                            }
                            for i, f in enumerate(chunk)
                        ],
                    )
                except Exception as exc:  # next period tries again
                    log.warning("could not extend visibility: %s", exc)
                    continue
                for f in chunk:
                    f.received = now

    async def _release_unfinished(self) -> None:
        """Make messages we will not finish visible again at once, for another processor."""
        left = list(self._in_flight.values())
        for start in range(0, len(left), 10):
            chunk = left[start : start + 10]
            entries: list[Any] = [
                {"Id": str(i), "ReceiptHandle": f.receipt_handle, "VisibilityTimeout": 0}
                for i, f in enumerate(chunk)
            ]
            try:
                await self.client.change_message_visibility_batch(
                    QueueUrl=self.queue.url, Entries=entries
                )
            except Exception as exc:  # they come back after the visibility timeout anyway
                log.warning("could not release messages: %s", exc)
        self._in_flight.clear()
