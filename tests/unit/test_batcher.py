"""The SendMessageBatch micro-batcher's logic (the real queue is in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from order_api import batcher


class RecordingQueue:
    """Stands in for the SQS client: records batches, fails the entries it is told to."""

    def __init__(
        self,
        *,
        fail_once: set[str] = frozenset(),
        sender_fault: set[str] = frozenset(),
        broken: Exception | None = None,
    ) -> None:
        self.batches: list[list[str]] = []
        self.fail_once = set(fail_once)
        self.sender_fault = sender_fault
        self.broken = broken

    async def send_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        if self.broken is not None:
            raise self.broken
        self.batches.append([e["MessageBody"] for e in Entries])
        ok, failed = [], []
        for entry in Entries:
            body = entry["MessageBody"]
            if body in self.sender_fault:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Message": "too big"})
            elif body in self.fail_once:
                self.fail_once.discard(body)
                failed.append({"Id": entry["Id"], "SenderFault": False, "Message": "busy"})
            else:
                ok.append({"Id": entry["Id"], "MessageId": f"id-{body}"})
        return {"Successful": ok, "Failed": failed}


def _batcher(queue: RecordingQueue, sizes: list[int] | None = None) -> batcher.SendBatcher:
    return batcher.SendBatcher(
        client=queue,  # type: ignore[arg-type]
        queue_url="q",
        max_wait=0.005,
        on_batch_sent=(sizes.append if sizes is not None else lambda n: None),
    )


async def test_concurrent_sends_share_batches_of_at_most_ten() -> None:
    queue = RecordingQueue()
    sizes: list[int] = []
    sender = _batcher(queue, sizes)
    ids = await asyncio.gather(*(sender.send(str(i)) for i in range(35)))
    assert ids == [f"id-{i}" for i in range(35)]
    assert max(sizes) == 10
    assert len(queue.batches) < 35 / 2  # they really were batched
    assert sorted(b for batch in queue.batches for b in batch) == sorted(str(i) for i in range(35))


async def test_a_lone_send_goes_at_once_without_waiting_to_fill_a_batch() -> None:
    sender = batcher.SendBatcher(client=RecordingQueue(), queue_url="q", max_wait=2.0)  # type: ignore[arg-type]
    assert await asyncio.wait_for(sender.send("solo"), timeout=1.0) == "id-solo"


async def test_a_stream_of_sends_gathers_for_max_wait_even_between_batches() -> None:
    """Sends arriving one at a time, each after the previous batch returned: only the first
    after a quiet spell goes at once, the rest share batches (one call each would cost the
    queue and the API most of their CPU per order under a steady stream)."""
    queue = RecordingQueue()
    sender = batcher.SendBatcher(client=queue, queue_url="q", max_wait=0.05)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    sends = []
    for i in range(10):
        sends.append(asyncio.create_task(sender.send(str(i))))
        await asyncio.sleep(0.003)  # longer than the queue takes to answer
    started = loop.time()
    await asyncio.gather(*sends)
    assert queue.batches[0] == ["0"]
    assert len(queue.batches) <= 3
    assert loop.time() - started < 0.05 + 0.03  # nobody waited much past max_wait


async def test_only_failed_entries_are_retried() -> None:
    queue = RecordingQueue(fail_once={"3"})
    sender = _batcher(queue)
    ids = await asyncio.gather(*(sender.send(str(i)) for i in range(5)))
    assert ids == [f"id-{i}" for i in range(5)]
    sent = [b for batch in queue.batches for b in batch]
    assert sent.count("3") == 2
    assert all(sent.count(str(i)) == 1 for i in (0, 1, 2, 4))


async def test_sender_fault_and_unreachable_queue_raise_queue_unavailable() -> None:
    sender = _batcher(RecordingQueue(sender_fault={"bad"}))
    with pytest.raises(batcher.QueueUnavailableError, match="too big"):
        await sender.send("bad")
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    broken = _batcher(RecordingQueue(broken=refused))
    results = await asyncio.gather(*(broken.send(str(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, batcher.QueueUnavailableError) for r in results)


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        ClientError(
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "SendMessageBatch",
        ),
        ConnectionError("reset"),
    ],
    ids=["read-timeout", "closed-mid-answer", "server-error", "unknown"],
)
async def test_a_send_that_may_have_been_stored_is_uncertain_not_refused(error: Exception) -> None:
    broken = _batcher(RecordingQueue(broken=error))
    results = await asyncio.gather(*(broken.send(str(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, batcher.DeliveryUncertainError) for r in results)
