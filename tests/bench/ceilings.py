"""The local engines' own ceilings, measured with a client that costs almost nothing.

vegeta sends prepared requests in a closed loop (each of `workers` connections sends the next
one as soon as the last is answered), so the figure is the engine's, not a Python client's: a
threaded boto3 client, used before, saturated its own core at a fraction of ElasticMQ's rate.
Requests are the engines' JSON wire protocol with a placeholder signature: the local engines
check its form (Dynoxide wants a credential scope and a date), not its value.

Each operation first runs unmeasured for `warm_up` seconds (ElasticMQ's JVM compiles its path).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3

from order_devtools import provision
from tests.bench import loadgen
from tests.bench.cpu import CpuMeter

WORKERS = 16
PAYLOAD = "x" * 256
SQS_BATCH = 10  # SendMessageBatch limit
DYNAMODB_BATCH = 25  # BatchWriteItem limit
TRANSACTION_ACTIONS = 5  # an order's reservation: its record, stock, velocity
# Enough distinct keys that a closed loop on a fast run never wraps round to a key it wrote
# (a repeat would fail its condition and show as success < 1).
PUTS_PER_SECOND_BOUND = 20000
TRANSACTIONS_PER_SECOND_BOUND = 10000
_DYNAMODB_AUTH = (
    "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request,"
    " SignedHeaders=host, Signature=0"
)


def _json_protocol(target: str) -> dict[str, str]:
    return {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"}


class _Saturator:
    def __init__(
        self, vegeta: Path, workdir: Path, meter: CpuMeter, *, seconds: float, warm_up: float
    ) -> None:
        self.vegeta, self.workdir, self.meter = vegeta, workdir, meter
        self.seconds, self.warm_up = seconds, warm_up

    def measure(
        self,
        name: str,
        url: str,
        headers: dict[str, str],
        bodies: Callable[[str, int], Iterator[dict[str, Any]]],
        per_second_bound: int,
    ) -> dict[str, Any]:
        """Warm up, then saturate; `bodies(prefix, n)` gives n requests with fresh keys (or
        one request to repeat, for operations that can repeat)."""
        for phase, seconds in (("warm", self.warm_up), ("run", self.seconds)):
            targets = self.workdir / f"ceiling-{name}-{phase}.json"
            loadgen.write_posts(
                targets, url, headers, bodies(phase, max(1, int(per_second_bound * seconds)))
            )
            cpu: dict[str, float] = {}
            with self.meter.measure(cpu):
                result = loadgen.saturate(
                    self.vegeta, targets, workers=WORKERS, seconds=seconds, workdir=self.workdir
                )
            targets.unlink()
        return {
            "requests_per_s": round(result.throughput, 1),
            "success": result.success,
            "p99_ms": round(result.p99_ms, 2),
            "engine_cpu_cores": next(iter(cpu.values())),
        }


def sqs_ceiling(
    vegeta: Path, endpoint: str, pid: int, workdir: Path, *, seconds: float, warm_up: float
) -> dict[str, Any]:
    """SendMessageBatch of 10 messages of 256 bytes, as the API's send batcher makes them."""
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    queue_url = sqs.create_queue(QueueName=f"bench-ceiling-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    saturator = _Saturator(
        vegeta, workdir, CpuMeter({"elasticmq": pid}), seconds=seconds, warm_up=warm_up
    )

    def batches(prefix: str, n: int) -> Iterator[dict[str, Any]]:
        entries = [{"Id": str(i), "MessageBody": PAYLOAD} for i in range(SQS_BATCH)]
        yield {"QueueUrl": queue_url, "Entries": entries}

    try:
        send = saturator.measure(
            "sqs-send",
            endpoint,
            _json_protocol("AmazonSQS.SendMessageBatch"),
            batches,
            per_second_bound=0,
        )
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
    return {
        "workers": WORKERS,
        "send_messages_per_s": round(send["requests_per_s"] * SQS_BATCH, 1),
        "send_batch": send,
    }


def dynamodb_ceiling(
    vegeta: Path, endpoint: str, pid: int, workdir: Path, *, seconds: float, warm_up: float
) -> dict[str, Any]:
    """Conditional PutItem (an order's first record), TransactWriteItems of 5 conditional puts
    (the size of one order's reservation), BatchWriteItem of 25 (the payment ledger)."""
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    table = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    provision.create_string_keyed_table(dynamodb, table)
    saturator = _Saturator(
        vegeta, workdir, CpuMeter({"dynoxide": pid}), seconds=seconds, warm_up=warm_up
    )

    def headers(operation: str) -> dict[str, str]:
        return {
            **_json_protocol(f"DynamoDB_20120810.{operation}"),
            "X-Amz-Date": "20260101T000000Z",
            "Authorization": _DYNAMODB_AUTH,
        }

    def item(key: str) -> dict[str, Any]:
        return {"pk": {"S": key}, "payload": {"S": PAYLOAD}}

    def puts(prefix: str, n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {
                "TableName": table,
                "Item": item(f"put-{prefix}-{i}"),
                "ConditionExpression": "attribute_not_exists(pk)",
            }

    def transactions(prefix: str, n: int) -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {
                "TransactItems": [
                    {
                        "Put": {
                            "TableName": table,
                            "Item": item(f"txn-{prefix}-{i}-{k}"),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for k in range(TRANSACTION_ACTIONS)
                ]
            }

    def batch_writes(prefix: str, n: int) -> Iterator[dict[str, Any]]:
        requests = [{"PutRequest": {"Item": item(f"batch-{k}")}} for k in range(DYNAMODB_BATCH)]
        yield {"RequestItems": {table: requests}}

    try:
        put = saturator.measure(
            "ddb-put", endpoint, headers("PutItem"), puts, PUTS_PER_SECOND_BOUND
        )
        transaction = saturator.measure(
            "ddb-txn",
            endpoint,
            headers("TransactWriteItems"),
            transactions,
            TRANSACTIONS_PER_SECOND_BOUND,
        )
        batch = saturator.measure(
            "ddb-batch", endpoint, headers("BatchWriteItem"), batch_writes, per_second_bound=0
        )
    finally:
        dynamodb.delete_table(TableName=table)
    return {
        "workers": WORKERS,
        "conditional_puts_per_s": put["requests_per_s"],
        "transaction_actions_per_s": round(transaction["requests_per_s"] * TRANSACTION_ACTIONS, 1),
        "batch_write_items_per_s": round(batch["requests_per_s"] * DYNAMODB_BATCH, 1),
        "conditional_put": put,
        "transaction_of_5": transaction,
        "batch_write_of_25": batch,
    }
