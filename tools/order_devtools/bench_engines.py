"""Ceilings of the local engines themselves, measured with tight batch clients.

These numbers bound what the pipeline benchmark can reach on the same machine: the API and the
processor cannot move more messages than the engine accepts from a client that does nothing
else. Each phase runs concurrent workers against a fresh queue or table for `seconds`.

`python -m order_devtools.bench_engines` starts in-memory engines and prints the ceilings as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import WriteRequestTypeDef
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 16
WARMUP_SECONDS = 1.0
SQS_BATCH_SIZE = 10
DYNAMODB_BATCH_SIZE = 25
PAYLOAD_BYTES = 256
# The local engines accept any credential; a real one must never be needed here.
LOCAL_CREDENTIAL = "local"


@dataclasses.dataclass
class _PhaseResult:
    operations: int = 0
    errors: int = 0
    elapsed: float = 0.0

    @property
    def per_second(self) -> float:
        return self.operations / self.elapsed if self.elapsed else 0.0


def _client_config(workers: int) -> Config:
    return Config(
        max_pool_connections=max(workers, 10),
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
    )


def _sqs_client(endpoint: str, workers: int) -> SQSClient:
    # One session per client: boto3's default session is not safe to share while threads build
    # clients from it.
    return boto3.session.Session().client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_CREDENTIAL,
        aws_secret_access_key=LOCAL_CREDENTIAL,
        config=_client_config(workers),
    )


def _dynamodb_client(endpoint: str, workers: int) -> DynamoDBClient:
    return boto3.session.Session().client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=LOCAL_CREDENTIAL,
        aws_secret_access_key=LOCAL_CREDENTIAL,
        config=_client_config(workers),
    )


def _run_phase(workers: int, seconds: float, step: Callable[[int], int]) -> _PhaseResult:
    """Call `step(worker_index)` in a loop on `workers` threads; each call returns items done.

    A step that returns 0 means "nothing left" and ends that worker early, so a drain phase
    finishes when the queue is empty rather than when time is up.
    """
    result = _PhaseResult()
    lock = threading.Lock()
    start_line = threading.Barrier(workers + 1)
    deadline = 0.0

    def work(worker_index: int) -> None:
        done = errors = 0
        start_line.wait()
        while time.monotonic() < deadline:
            try:
                count = step(worker_index)
            except Exception:
                errors += 1
                logger.exception("benchmark worker %s failed a request", worker_index)
                continue
            if count == 0:
                break
            done += count
        with lock:
            result.operations += done
            result.errors += errors

    threads = [
        threading.Thread(target=work, args=(index,), daemon=True) for index in range(workers)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline = started + seconds
    start_line.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.monotonic() - started
    return result


def measure_engine_ceiling(
    sqs_endpoint: str,
    *,
    seconds: float = 5.0,
    workers: int = DEFAULT_WORKERS,
    warmup_seconds: float = WARMUP_SECONDS,
) -> dict[str, float]:
    """Messages/s the SQS engine accepts (SendMessageBatch of 10) and then serves
    (ReceiveMessage of 10 + DeleteMessageBatch), each phase for `seconds` on a fresh queue.

    A short unmeasured send phase first lets the JVM compile the hot paths.
    """
    clients = [_sqs_client(sqs_endpoint, workers) for _ in range(workers)]
    queue_url = clients[0].create_queue(
        QueueName=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
        Attributes={"VisibilityTimeout": "60"},
    )["QueueUrl"]
    body = "x" * PAYLOAD_BYTES
    entries: list[SendMessageBatchRequestEntryTypeDef] = [
        {"Id": str(index), "MessageBody": body} for index in range(SQS_BATCH_SIZE)
    ]

    def send(worker_index: int) -> int:
        response = clients[worker_index].send_message_batch(
            QueueUrl=queue_url,
            Entries=entries,
        )
        return len(response.get("Successful", []))

    def consume(worker_index: int) -> int:
        client = clients[worker_index]
        messages = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=SQS_BATCH_SIZE
        ).get("Messages", [])
        if not messages:
            return 0
        response = client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                for index, message in enumerate(messages)
            ],
        )
        return len(response.get("Successful", []))

    try:
        _run_phase(workers, warmup_seconds, send)
        sent = _run_phase(workers, seconds, send)
        consumed = _run_phase(workers, seconds, consume)
    finally:
        clients[0].delete_queue(QueueUrl=queue_url)
    return {
        "workers": float(workers),
        "send_messages_per_s": sent.per_second,
        "send_requests_per_s": sent.per_second / SQS_BATCH_SIZE,
        "consume_messages_per_s": consumed.per_second,
        "messages_sent": float(sent.operations),
        "messages_consumed": float(consumed.operations),
        "errors": float(sent.errors + consumed.errors),
    }


def measure_dynamodb_ceiling(
    dynamodb_endpoint: str,
    *,
    seconds: float = 5.0,
    workers: int = DEFAULT_WORKERS,
    warmup_seconds: float = WARMUP_SECONDS,
) -> dict[str, float]:
    """Conditional PutItem/s (attribute_not_exists, as an idempotency record) and
    BatchWriteItem items/s (25 per request), each phase for `seconds` on a fresh table."""
    clients = [_dynamodb_client(dynamodb_endpoint, workers) for _ in range(workers)]
    table = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    clients[0].create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    payload = "x" * PAYLOAD_BYTES
    counters = [0] * workers

    def next_key(worker_index: int) -> str:
        counters[worker_index] += 1
        return f"w{worker_index}-{counters[worker_index]}"

    def conditional_put(worker_index: int) -> int:
        clients[worker_index].put_item(
            TableName=table,
            Item={"pk": {"S": next_key(worker_index)}, "payload": {"S": payload}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return 1

    def batch_write(worker_index: int) -> int:
        requests: list[WriteRequestTypeDef] = [
            {
                "PutRequest": {
                    "Item": {"pk": {"S": next_key(worker_index)}, "payload": {"S": payload}}
                }
            }
            for _ in range(DYNAMODB_BATCH_SIZE)
        ]
        while requests:
            response = clients[worker_index].batch_write_item(RequestItems={table: requests})
            # Unprocessed requests come back in the output shape, which is valid input as is.
            unprocessed = response.get("UnprocessedItems", {}).get(table, [])
            requests = cast("list[WriteRequestTypeDef]", unprocessed)
        return DYNAMODB_BATCH_SIZE

    try:
        _run_phase(workers, warmup_seconds, conditional_put)
        puts = _run_phase(workers, seconds, conditional_put)
        batches = _run_phase(workers, seconds, batch_write)
    finally:
        clients[0].delete_table(TableName=table)
    return {
        "workers": float(workers),
        "conditional_puts_per_s": puts.per_second,
        "batch_write_items_per_s": batches.per_second,
        "batch_write_requests_per_s": batches.per_second / DYNAMODB_BATCH_SIZE,
        "errors": float(puts.errors + batches.errors),
    }


def main() -> None:
    from order_devtools import engines

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[DEFAULT_WORKERS])
    parser.add_argument("--sqs-endpoint", help="measure a running engine instead of starting one")
    parser.add_argument("--dynamodb-endpoint")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    def measure(sqs_endpoint: str, dynamodb_endpoint: str) -> None:
        for workers in arguments.workers:
            results = {
                "sqs": measure_engine_ceiling(
                    sqs_endpoint, seconds=arguments.seconds, workers=workers
                ),
                "dynamodb": measure_dynamodb_ceiling(
                    dynamodb_endpoint, seconds=arguments.seconds, workers=workers
                ),
            }
            print(json.dumps(results, indent=2), flush=True)

    if arguments.sqs_endpoint and arguments.dynamodb_endpoint:
        measure(arguments.sqs_endpoint, arguments.dynamodb_endpoint)
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-engines-") as state_dir,
        engines.running_engines(Path(state_dir), persistent=False) as running,
    ):
        measure(running.sqs_endpoint, running.dynamodb_endpoint)


if __name__ == "__main__":
    main()
