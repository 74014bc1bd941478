"""The SQS side of the processor: receive, dispatch, delete successes, extend, stop cleanly.

Pollers long-poll at once; each processes its batch concurrently and deletes the successes in
one DeleteMessageBatch. Their number follows the backlog: a full receive means more messages
are waiting, so its poller starts another (up to concurrency / batch size of them); a partial
one means the queue is nearly drained, so its poller stops (down to half of them). Batches
thus stay full under load without thinning out below it, where every extra receive costs the
queue and the processor CPU per order. A poller whose batch was partial pauses briefly before
its next receive, so that batches fill up. Failures
are not deleted: the visibility timeout brings them back and the queue's redrive policy moves
them to the DLQ after maxReceiveCount receives. A message that cannot be parsed is moved to the
DLQ at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from order_common import aws, contract, tracing
from order_processor import metrics, workflow

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

log = logging.getLogger(__name__)

DEAD_LETTER_RETRY_SECONDS = 30

_DEPTH_ATTRIBUTES: dict[QueueAttributeNameType, str] = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}
"""The queue attributes read for `order_queue_messages`, and its `state` label for each."""


@dataclass(frozen=True)
class QueueInfo:
    url: str
    dlq_url: str | None
    max_receive_count: int
    visibility_timeout: int

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def dlq_name(self) -> str | None:
        return None if self.dlq_url is None else self.dlq_url.rsplit("/", 1)[-1]


async def describe_queue(
    client: SQSClient, queue_name: str, *, receives_without_redrive: int
) -> QueueInfo:
    """Find the queue, its DLQ and limits from the queue's own attributes (one source of truth).

    A queue with no redrive policy would hand a failing message out forever: then the
    processor gives up after `receives_without_redrive` receives itself."""
    url = (await client.get_queue_url(QueueName=queue_name))["QueueUrl"]
    attributes = (
        await client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
        )
    )["Attributes"]
    dlq_url = None
    max_receive_count = receives_without_redrive
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
    visible_set_at: float
    """When its visibility timeout was last set (received or extended), monotonic."""
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
    receive_linger: float = 0.0
    """Seconds a poller pauses after a partial batch before it receives again."""
    dead_letter_recheck_seconds: int = 12 * 3600
    queue_depth_interval_seconds: float = 15.0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: dict[str, _InFlight] = field(default_factory=dict)
    _pollers: set[asyncio.Task[None]] = field(default_factory=set)
    _polling: int = 0
    """Pollers that have not decided to stop (their tasks may still be finishing)."""
    processed: int = 0
    retried: int = 0
    last_poll: float = field(default_factory=time.monotonic)
    """When a poll last completed (monotonic): the liveness signal."""

    @property
    def max_pollers(self) -> int:
        return max(1, math.ceil(self.concurrency / self.batch_size))

    @property
    def min_pollers(self) -> int:
        """Half the most, kept however quiet the queue: processors beside each other (a canary
        and its stable side) then share the messages by their concurrency at rest too."""
        return math.ceil(self.max_pollers / 2)

    @property
    def pollers(self) -> int:
        """Pollers receiving now."""
        return self._polling

    def _start_poller(self) -> None:
        self._polling += 1
        metrics.POLLERS.set(self._polling)
        task = asyncio.create_task(self._poll_forever())
        self._pollers.add(task)
        task.add_done_callback(self._pollers.discard)

    def _leave_poller(self) -> None:
        self._polling -= 1
        metrics.POLLERS.set(self._polling)

    def stop(self) -> None:
        """Stop receiving; in-flight messages finish (see `run`'s grace)."""
        self._stopping.set()

    async def run(self, *, shutdown_grace: float) -> None:
        heartbeat = asyncio.create_task(self._extend_visibility_forever())
        for _ in range(self.min_pollers):
            self._start_poller()
        reconciler = asyncio.create_task(self._reconcile_dead_letters_forever())
        depths = asyncio.create_task(self._observe_queue_depths_forever())
        await self._stopping.wait()
        reconciler.cancel()
        depths.cancel()
        await asyncio.gather(reconciler, depths, return_exceptions=True)
        log.info("stopping: %s messages in flight", len(self._in_flight))
        # No poller starts once stopping is set: these are all there will be (maybe none left).
        pending: set[asyncio.Task[None]] = set()
        if self._pollers:
            _, pending = await asyncio.wait(set(self._pollers), timeout=shutdown_grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._release_unfinished()
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        log.info("stopped: %s processed, %s left for retry", self.processed, self.retried)

    async def _poll_forever(self) -> None:
        try:
            await self._poll_while_needed()
        finally:
            self._leave_poller()

    async def _poll_while_needed(self) -> None:
        while not self._stopping.is_set():
            receive = asyncio.create_task(
                self.hot.receive_message(
                    QueueUrl=self.queue.url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_time_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    # Every one the API sets: the trace context among them.
                    MessageAttributeNames=list(contract.MESSAGE_ATTRIBUTE_NAMES),
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
            full = len(messages) >= self.batch_size
            if full and self._polling < self.max_pollers and not self._stopping.is_set():
                self._start_poller()  # more are waiting: receive them while this batch runs
            if messages:
                await self._handle_batch(messages)
            if not full and self._polling > self.min_pollers:
                return  # nearly drained: the others' batches fill up without this one
            if messages and not full and self.receive_linger:
                # The queue is nearly drained: the other pollers keep long-polling for what
                # comes next, while this one lets a fuller batch gather for its next receive.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.receive_linger)

    async def _handle_batch(self, messages: list[MessageTypeDef]) -> None:
        received = time.monotonic()
        # Keyed by receipt handle: a message redelivered while an earlier receive of it is
        # still being worked on is held twice, and each hold is extended and let go on its own.
        for m in messages:
            self._in_flight[m["ReceiptHandle"]] = _InFlight(m["ReceiptHandle"], received)
        try:
            await self._process_batch(messages)
        except Exception:  # a bug, not a fault: never hold (and extend) its messages forever
            log.exception(
                "batch of %s failed; its messages come back after the timeout", len(messages)
            )
        # Cancelled at shutdown, the entries stay in `_in_flight` for `_release_unfinished`.
        for m in messages:
            self._in_flight.pop(m["ReceiptHandle"], None)

    async def _process_batch(self, messages: list[MessageTypeDef]) -> None:
        # One CONSUMER span per message, ended once its outcome is known; its order's work
        # runs under it (workflow.Delivery.trace).
        spans = (
            {m["ReceiptHandle"]: tracing.start_processing(self.queue.name, m) for m in messages}
            if tracing.enabled
            else {}
        )
        deliveries: list[tuple[MessageTypeDef, workflow.Delivery]] = []
        done: list[MessageTypeDef] = []
        try:
            for m in messages:
                span = spans.get(m["ReceiptHandle"])
                try:
                    order = contract.decode_message(m["Body"])
                except pydantic.ValidationError as exc:
                    tracing.record_error(span, exc)
                    reason = f"unparseable message: {exc.error_count()} errors"
                    with tracing.activated(span):
                        if await self._dead_letter(m, reason):
                            done.append(m)
                    continue
                attributes = m.get("Attributes", {})
                receive_count = int(attributes.get("ApproximateReceiveCount", "1"))
                if "SentTimestamp" in attributes:  # milliseconds since the epoch
                    age = time.time() - int(attributes["SentTimestamp"]) / 1000
                    metrics.AGE_AT_RECEIVE.observe(max(0.0, age))
                message_attributes = m.get("MessageAttributes", {})
                request_attribute = message_attributes.get("request_id")
                request_id = request_attribute.get("StringValue") if request_attribute else None
                delivery = workflow.Delivery(
                    order,
                    receive_count,
                    request_id,
                    span,
                    producer_version=contract.producer_version(message_attributes),
                )
                deliveries.append((m, delivery))
            if deliveries:
                await self._run(deliveries, done)
        except BaseException as exc:  # a bug, or cancelled at shutdown: no span left open
            for span in spans.values():
                tracing.record_error(span, exc)
            raise
        finally:
            settled = {m["ReceiptHandle"] for m in done} if spans else set()
            for handle, span in spans.items():
                tracing.end_processing(span, retried=handle not in settled)
        if done:
            # Settling the batch: linked to each message's process span.
            with tracing.across(spans.get(m["ReceiptHandle"]) for m in done):
                await self._delete(done)

    async def _run(
        self,
        deliveries: list[tuple[MessageTypeDef, workflow.Delivery]],
        done: list[MessageTypeDef],
    ) -> None:
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
        for (m, delivery), disposition in zip(deliveries, dispositions, strict=True):
            if disposition is workflow.Disposition.ACK:
                self.processed += 1
                done.append(m)
            elif self._exhausted_without_dlq(delivery):
                done.append(m)  # recorded FAILED on this last receive; no DLQ to go to
            else:
                self.retried += 1

    async def _observe_queue_depths_forever(self) -> None:
        """Publish the depths of the queue and its DLQ (`order_queue_messages`): the backlog
        and the dead letters that dashboards and alerts watch. Every replica reports the same
        numbers; queries take their max."""
        queues = {"orders": self.queue.url}
        if self.queue.dlq_url is not None:
            queues["dead-letter"] = self.queue.dlq_url
        while True:
            for role, url in queues.items():
                try:
                    response = await self.client.get_queue_attributes(
                        QueueUrl=url, AttributeNames=list(_DEPTH_ATTRIBUTES)
                    )
                except Exception as exc:  # engine down: keep the last numbers, try again
                    log.warning("reading the depth of %s failed: %s", url, exc)
                    continue
                attributes = response.get("Attributes", {})
                for attribute, state in _DEPTH_ATTRIBUTES.items():
                    count = float(attributes.get(attribute, "0"))
                    metrics.QUEUE_MESSAGES.labels(queue=role, state=state).set(count)
            await asyncio.sleep(self.queue_depth_interval_seconds)

    async def _reconcile_dead_letters_forever(self) -> None:
        """Every order whose message reaches the DLQ ends FAILED with a reason.

        The processor records FAILED on a message's last receive itself, but not when that
        write fails, when a message was released at shutdown until redrive took it, or when it
        could not be parsed. The messages stay in the DLQ for people to inspect or redrive;
        each recorded one is hidden for `dead_letter_recheck_seconds`, and recording it again
        when it reappears changes nothing.
        """
        dlq_url = self.queue.dlq_url
        if dlq_url is None:
            return
        while True:
            try:
                # Hidden briefly while being recorded (a processor killed meanwhile leaves it
                # to the next), then for long once recorded.
                response = await self.client.receive_message(
                    QueueUrl=dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.wait_time_seconds,
                    VisibilityTimeout=DEAD_LETTER_RETRY_SECONDS,
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # engine down: try again later
                log.warning("reading the DLQ failed: %s", exc)
                await asyncio.sleep(5.0)
                continue
            for message in response.get("Messages", []):
                await self._record_dead_letter(dlq_url, message)

    async def _record_dead_letter(self, dlq_url: str, message: MessageTypeDef) -> None:
        try:
            order = contract.decode_message(message["Body"])
        except pydantic.ValidationError:
            metrics.DEAD_LETTERS_RECORDED.labels("unparseable").inc()
            with contextlib.suppress(Exception):  # no order to record: it stays for people
                await self.client.change_message_visibility(
                    QueueUrl=dlq_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self.dead_letter_recheck_seconds,
                )
            return
        attribute = message.get("MessageAttributes", {}).get("dead_letter_reason")
        reason = (attribute.get("StringValue") if attribute else None) or (
            "processing did not succeed within the queue's maxReceiveCount"
            f" ({self.queue.max_receive_count}); the message is in the dead-letter queue"
        )
        # Processed like any message: the FAILED write ends up in the order's trace.
        span = tracing.start_processing(self.queue.dlq_name or "", message)
        workflow.producer_version_var.set(
            contract.producer_version(message.get("MessageAttributes", {}))
        )
        try:
            with tracing.activated(span):
                await self.order_workflow.record_failed(order, reason)
        except Exception as exc:  # it reappears after the short hold and is tried again
            log.warning("could not record dead-lettered order %s: %s", order.order_id, exc)
            metrics.DEAD_LETTERS_RECORDED.labels("retry").inc()
            tracing.record_error(span, exc)
            return
        finally:
            tracing.end_processing(span, retried=False)
        metrics.DEAD_LETTERS_RECORDED.labels("failed").inc()
        with contextlib.suppress(Exception):  # if not, it is recorded again, changing nothing
            await self.client.change_message_visibility(
                QueueUrl=dlq_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self.dead_letter_recheck_seconds,
            )

    def _exhausted_without_dlq(self, delivery: workflow.Delivery) -> bool:
        return self.queue.dlq_url is None and delivery.receive_count >= self.queue.max_receive_count

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
        """Keep slow messages invisible: extend any held for a third of the timeout.

        The check runs every second (six times per timeout when that is shorter), so an
        extension that fails (the whole call, or one entry of it) is tried again well before
        the message would reappear.
        """
        timeout = self.queue.visibility_timeout
        extend_after = timeout / 3
        while True:
            await asyncio.sleep(max(0.1, min(1.0, timeout / 6)))
            now = time.monotonic()
            due = [f for f in self._in_flight.values() if now - f.visible_set_at >= extend_after]
            for start in range(0, len(due), 10):
                await self._extend(due[start : start + 10], now)

    async def _extend(self, chunk: list[_InFlight], now: float) -> None:
        timeout = self.queue.visibility_timeout
        try:
            response = await self.client.change_message_visibility_batch(
                QueueUrl=self.queue.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": f.receipt_handle, "VisibilityTimeout": timeout}
                    for i, f in enumerate(chunk)
                ],
            )
        except Exception as exc:  # all of them stay due
            log.warning("could not extend visibility: %s", exc)
            metrics.VISIBILITY_EXTENSION_FAILURES.inc(len(chunk))
            return
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        for i, held in enumerate(chunk):
            failure = failed.get(str(i))
            if failure is None:
                held.visible_set_at = now
                continue
            # Stays due. A handle that is no longer valid (the message came back and was
            # received again) keeps failing until this copy finishes; the conditional
            # writes make the other copy harmless.
            log.warning(
                "could not extend visibility of a message: %s %s",
                failure.get("Code"),
                failure.get("Message", ""),
            )
            metrics.VISIBILITY_EXTENSION_FAILURES.inc()

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
