"""Micro-batching of SendMessage into SendMessageBatch.

Each accepted order waits for its own entry's acknowledgement, but entries from concurrent
requests share one SendMessageBatch call (up to 10), cutting the client cost per message about
tenfold. After a quiet spell (no batch sent for `max_wait`, none in flight) an entry is sent at
once, so a lone request pays no wait; under a stream of requests entries gather until ten are
there or `max_wait` has passed, so the calls per order fall as the load rises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Unpack

from order_common import aws, tracing

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageBatchRequestTypeDef,
        SendMessageBatchResultTypeDef,
    )

log = logging.getLogger(__name__)

MAX_BATCH_ENTRIES = 10  # SQS limit
_ENTRY_ATTEMPTS = 3


class MessageBatchSender(Protocol):
    """An SQS client's SendMessageBatch (aiobotocore's, or order_common.aws.SqsHotPath)."""

    async def send_message_batch(
        self, **kwargs: Unpack[SendMessageBatchRequestTypeDef]
    ) -> SendMessageBatchResultTypeDef: ...


class QueueUnavailableError(Exception):
    """The queue refused the message or could not be reached: nothing was accepted."""


class DeliveryUncertainError(Exception):
    """The queue did not confirm the message, but may have stored it (a timeout, a connection
    lost mid-answer, a server error): the order must be treated as possibly accepted."""


@dataclass
class _Pending:
    entry: SendMessageBatchRequestEntryTypeDef
    future: asyncio.Future[str]
    trace: tracing.Span | None = None
    """The order's PRODUCER span, which the batch's send links to."""
    attempts: int = 0


@dataclass
class SendBatcher:
    client: MessageBatchSender
    queue_url: str
    max_wait: float = 0.005
    on_batch_sent: Callable[[int], None] = lambda size: None
    _pending: list[_Pending] = field(default_factory=list)
    _in_flight: int = 0
    _timer: asyncio.TimerHandle | None = None
    _last_flush: float = -1e9
    """When a batch last left (the loop's clock): entries arriving sooner gather."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _next_id: int = 0

    async def send(
        self,
        body: str,
        attributes: Mapping[str, MessageAttributeValueTypeDef] | None = None,
        *,
        trace: tracing.Span | None = None,
    ) -> str:
        """Queue one message; return its MessageId once SQS has acknowledged it. `trace`: the
        message's PRODUCER span (see `_send_batch`)."""
        self._next_id += 1
        entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(self._next_id), "MessageBody": body}
        if attributes:
            entry["MessageAttributes"] = attributes
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(entry=entry, future=future, trace=trace))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = self._in_flight == 0 and loop.time() - self._last_flush >= self.max_wait
        if len(self._pending) >= MAX_BATCH_ENTRIES or quiet:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._last_flush = asyncio.get_running_loop().time()
        while self._pending:
            batch = self._pending[:MAX_BATCH_ENTRIES]
            del self._pending[:MAX_BATCH_ENTRIES]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            # The call's CLIENT span: a child of the first order's PRODUCER span, linking to
            # every order's, whichever request's context this task happened to start in.
            with tracing.across(p.trace for p in batch):
                response = await self.client.send_message_batch(
                    QueueUrl=self.queue_url, Entries=[p.entry for p in batch]
                )
        except Exception as exc:
            log.warning("SendMessageBatch of %s failed: %s", len(batch), exc)
            refused = aws.surely_not_applied(exc)
            for pending in batch:
                if not pending.future.done():
                    error_type = QueueUnavailableError if refused else DeliveryUncertainError
                    pending.future.set_exception(error_type(str(exc)))
            return
        finally:
            self._in_flight -= 1
            if self._pending and self._timer is None:
                self._flush()
        self.on_batch_sent(len(batch))
        by_id = {p.entry["Id"]: p for p in batch}
        for ok in response.get("Successful", []):
            pending = by_id.pop(ok["Id"])
            if not pending.future.done():
                pending.future.set_result(ok["MessageId"])
        for failed in response.get("Failed", []):
            pending = by_id.pop(failed["Id"])
            pending.attempts += 1
            if failed.get("SenderFault") or pending.attempts >= _ENTRY_ATTEMPTS:
                pending.future.set_exception(QueueUnavailableError(failed.get("Message", "")))
            else:  # only the failed entries go round again
                self._pending.append(pending)
        if self._pending:
            self._schedule()
        log.debug("sent batch of %s in %.1f ms", len(batch), (time.perf_counter() - started) * 1e3)

    async def close(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
