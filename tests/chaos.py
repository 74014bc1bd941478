"""A chaos soak that checks the pipeline's promise from its tables and its ledger.

Clients place orders (each with its own Idempotency-Key, retried with the same key until it is
answered 202, some replayed after that) while faults are injected at random into the engine
traffic of both services, the processor is SIGKILLed and restarted, and an engine is
restarted. After the drain it checks, from the tables, the ledger and the queues:

- one order per Idempotency-Key;
- every accepted order in exactly one final state (none missing, QUEUED or PROCESSING);
- charges = COMPLETED orders + refunds, each COMPLETED order charged once and not refunded;
- stock conserved: initial - final = the quantities of the COMPLETED orders;
- every order whose message reached the DLQ recorded FAILED.

`run_soak` is shared by the integration test (2,000 orders) and `make chaos` (longer runs:
`python -m tests.chaos --orders 20000`).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx

from order_common import schema
from order_devtools import engines, local, provision
from tests import faultproxy
from tests.faultproxy import Fault, FaultKind

SKUS = {f"SKU-CHAOS-{i}": (f"chaos {i}", 100 * (i + 1), 1_000_000) for i in range(5)}
# Payment tokens and their share: most orders complete; some are declined (REJECTED); some
# can never be paid (retried, then FAILED through the DLQ).
TOKENS = (("tok_ok", 0.90), ("tok_decline_chaos", 0.05), ("tok_unavailable_chaos", 0.05))
FINAL = {"COMPLETED", "REJECTED", "FAILED"}
DLQ_RECHECK_SECONDS = 2


@dataclasses.dataclass
class SoakSettings:
    orders: int = 2000
    clients: int = 16
    fault_probability: float = 0.03
    replay_share: float = 0.1
    seed: int = 7
    drain_timeout: float = 240.0


@dataclasses.dataclass
class Placed:
    key: str
    customer_id: str
    body: dict[str, Any]
    order_ids: set[str] = dataclasses.field(default_factory=set)
    accepted: bool = False
    attempts: int = 0


def random_faults(probability: float) -> list[Fault]:
    """Every kind of fault, on every operation, each with its share of `probability`."""
    share = probability / 5
    return [
        Fault(FaultKind.DROP_RESPONSE, times=None, probability=share),
        Fault(FaultKind.RESET, times=None, probability=share),
        Fault(FaultKind.SERVER_ERROR, times=None, probability=share),
        Fault(FaultKind.THROTTLE, times=None, probability=share),
        Fault(FaultKind.DELAY, times=None, probability=share, seconds=0.5),
    ]


def _place(
    client: httpx.Client, token: str, order: Placed, rng: random.Random, replay_share: float
) -> None:
    """POST with the order's key until a 202; a 503 that names an order id counts too."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": order.key}
    while not order.accepted:
        order.attempts += 1
        try:
            answer = client.post("/v1/orders", json=order.body, headers=headers)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if answer.status_code == 202:
            order.order_ids.add(answer.json()["order_id"])
            order.accepted = True
        elif answer.status_code in (409, 429, 503):
            if "order_id" in answer.json():
                order.order_ids.add(answer.json()["order_id"])
            time.sleep(0.1 + rng.random() * 0.3)
        else:
            raise AssertionError(f"unexpected answer {answer.status_code}: {answer.text}")
    if rng.random() < replay_share:  # a client that retries although it was answered
        replay = client.post("/v1/orders", json=order.body, headers=headers)
        if replay.status_code == 202:
            order.order_ids.add(replay.json()["order_id"])


def _orders_body(index: int, rng: random.Random) -> dict[str, Any]:
    token = rng.choices([t for t, _ in TOKENS], weights=[w for _, w in TOKENS])[0]
    skus = rng.sample(sorted(SKUS), k=rng.randint(1, 2))
    return {
        "customer_id": f"chaos-{index}",
        "items": [{"sku": s, "quantity": rng.randint(1, 3)} for s in skus],
        "currency": "USD",
        "payment_token": token,
    }


@dataclasses.dataclass
class SoakReport:
    counts: dict[str, int]
    violations: list[str]

    def print(self) -> None:
        print("chaos soak:", json.dumps(self.counts, sort_keys=True), flush=True)
        for violation in self.violations[:20]:
            print("  VIOLATION:", violation, flush=True)


def run_soak(
    running: engines.Engines,
    pipeline: local.LocalPipeline,
    log_dir: Path,
    settings: SoakSettings,
    *,
    progress: Callable[[str], None] = lambda line: print(line, flush=True),
) -> SoakReport:
    rng = random.Random(settings.seed)
    placed = [
        Placed(key=f"chaos-{uuid.uuid4().hex}", customer_id=f"chaos-{i}", body=_orders_body(i, rng))
        for i in range(settings.orders)
    ]
    with (
        faultproxy.proxied(pipeline.sqs_endpoint, seed=settings.seed) as api_sqs,
        faultproxy.proxied(pipeline.dynamodb_endpoint, seed=settings.seed + 1) as api_ddb,
        faultproxy.proxied(pipeline.sqs_endpoint, seed=settings.seed + 2) as proc_sqs,
        faultproxy.proxied(pipeline.dynamodb_endpoint, seed=settings.seed + 3) as proc_ddb,
    ):
        api_view = dataclasses.replace(
            pipeline, sqs_endpoint=api_sqs.endpoint, dynamodb_endpoint=api_ddb.endpoint
        )
        processor_view = dataclasses.replace(
            pipeline, sqs_endpoint=proc_sqs.endpoint, dynamodb_endpoint=proc_ddb.endpoint
        )
        proxies = (api_sqs, api_ddb, proc_sqs, proc_ddb)
        api = local.api_process(
            api_view, local.free_port(), log_dir, RATE_LIMIT_PER_MINUTE="10000000"
        )
        # DLQ messages reappear soon after being recorded, so the check can read them all.
        processor_env = {
            "VELOCITY_LIMIT": "1000",
            "CONCURRENCY": "40",
            "DEAD_LETTER_RECHECK_SECONDS": str(DLQ_RECHECK_SECONDS),
        }
        processor = local.processor_process(
            processor_view, local.free_port(), log_dir, **processor_env
        )
        api.start()
        processor.start()
        disruptor = _Disruptor(running, processor, processor_view, log_dir, processor_env, progress)
        base = api.health_url.removesuffix("/healthz")
        clients = threading.local()

        def place(order: Placed) -> None:
            if not hasattr(clients, "client"):
                clients.client = httpx.Client(base_url=base, timeout=30)
            rng = random.Random(order.key)
            _place(clients.client, token, order, rng, settings.replay_share)

        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                token = client.post(
                    "/v1/auth/token", json={"client_id": "demo", "client_secret": "demo-secret"}
                ).json()["access_token"]
                for proxy in proxies:
                    proxy.inject(*random_faults(settings.fault_probability))
                started = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(settings.clients) as pool:
                    placing = [pool.submit(place, order) for order in placed]
                    # Processes are started from this thread: a child started from a thread
                    # that ends is sent SIGTERM then (its parent-death signal is per thread).
                    disruptor.run(until=lambda: all(f.done() for f in placing))
                    for future in placing:
                        future.result()
                progress(f"placed {len(placed)} orders in {time.monotonic() - started:.0f} s")
                for proxy in proxies:
                    proxy.clear()
                _drain(pipeline, settings.drain_timeout, progress)
        finally:
            disruptor.processor.stop()
            api.stop()
        fault_counts = collections.Counter[str]()
        for proxy in proxies:
            fault_counts.update(proxy.stats.faulted)
    report = check_invariants(pipeline, placed)
    report.counts.update({f"faults_{k}": v for k, v in fault_counts.items()})
    return report


@dataclasses.dataclass
class _Disruptor:
    """SIGKILLs the processor and starts another every few seconds; every other round it also
    restarts the DynamoDB engine under both services."""

    running: engines.Engines
    processor: local.ServiceProcess
    view: local.LocalPipeline
    log_dir: Path
    env: dict[str, str]
    progress: Callable[[str], None]
    period: float = 4.0

    def run(self, *, until: Callable[[], bool]) -> None:
        rounds = 0
        next_round = time.monotonic() + self.period
        while not until():
            if time.monotonic() < next_round:
                time.sleep(0.1)
                continue
            next_round = time.monotonic() + self.period
            rounds += 1
            self.processor.kill()
            self.processor = local.processor_process(
                self.view, local.free_port(), self.log_dir, **self.env
            )
            self.processor.start()
            self.progress(f"disruption {rounds}: processor killed and restarted")
            if rounds % 2 == 1:
                self.running.dynamodb.stop()
                self.running.dynamodb.start()
                self.progress(f"disruption {rounds}: DynamoDB engine restarted")


def _drain(pipeline: local.LocalPipeline, timeout: float, progress: Callable[[str], None]) -> None:
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    url = sqs.get_queue_url(QueueName=pipeline.queue_name)["QueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        left = sum(int(v) for v in attributes.values())
        if left == 0 and not _records(pipeline, status="PROCESSING"):
            return
        time.sleep(1.0)
    progress(f"not drained within {timeout:.0f} s")


def _scan(pipeline: local.LocalPipeline, table: str) -> Iterator[dict[str, Any]]:
    dynamodb = boto3.client("dynamodb", endpoint_url=pipeline.dynamodb_endpoint)
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=f"{pipeline.table_prefix}{table}", ConsistentRead=True
    ):
        yield from page["Items"]


def _records(pipeline: local.LocalPipeline, *, status: str | None = None) -> list[dict[str, Any]]:
    return [
        item
        for item in _scan(pipeline, "orders")
        if status is None or item["status"]["S"] == status
    ]


def check_invariants(pipeline: local.LocalPipeline, placed: list[Placed]) -> SoakReport:
    violations: list[str] = []
    records = _records(pipeline)
    by_customer: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for item in records:
        by_customer[item.get("customer_id", {}).get("S", "")].append(item)
    statuses = collections.Counter(item["status"]["S"] for item in records)

    for order in placed:
        found = by_customer.get(order.customer_id, [])
        if len(found) > 1:
            violations.append(f"{order.key}: {len(found)} orders for one Idempotency-Key")
        if order.accepted and not found:
            violations.append(f"{order.key}: accepted, no record (left QUEUED)")
        for item in found:
            if item["status"]["S"] not in FINAL:
                violations.append(f"{order.key}: left {item['status']['S']}")
        if len(order.order_ids) > 1:
            violations.append(f"{order.key}: answered with {len(order.order_ids)} order ids")

    ledger = {item["order_id"]["S"]: item for item in _scan(pipeline, "payments")}
    refunded = {oid for oid, entry in ledger.items() if "refunded_at" in entry}
    completed = {i["order_id"]["S"]: i for i in records if i["status"]["S"] == "COMPLETED"}
    if len(ledger) != len(completed) + len(refunded):
        violations.append(
            f"charges {len(ledger)} != COMPLETED {len(completed)} + refunds {len(refunded)}"
        )
    for order_id in completed:
        if order_id not in ledger or order_id in refunded:
            violations.append(f"{order_id}: COMPLETED without a standing charge")
    for order_id in set(ledger) - set(completed) - refunded:
        violations.append(f"{order_id}: charged, not COMPLETED, not refunded")

    taken: dict[str, int] = collections.Counter()
    for item in completed.values():
        for line in item["items"]["L"]:
            taken[line["M"]["sku"]["S"]] += int(line["M"]["quantity"]["N"])
    for sku, (_, _, initial) in SKUS.items():
        stock = next(
            int(i["stock"]["N"]) for i in _scan(pipeline, "catalog") if i["sku"]["S"] == sku
        )
        if initial - stock != taken[sku]:
            violations.append(f"{sku}: stock {initial} - {stock} != {taken[sku]} sold")

    unpayable = [o for o in placed if o.accepted and "unavailable" in o.body["payment_token"]]
    for order in unpayable:
        found = by_customer.get(order.customer_id, [])
        if not found or found[0]["status"]["S"] != "FAILED":
            violations.append(f"{order.key}: never payable, not FAILED")
    sqs = boto3.client("sqs", endpoint_url=pipeline.sqs_endpoint)
    dlq_url = sqs.get_queue_url(QueueName=schema.dlq_name(pipeline.queue_name))["QueueUrl"]
    dlq = sqs.get_queue_attributes(
        QueueUrl=dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    dlq_depth = sum(int(v) for v in dlq.values())
    time.sleep(DLQ_RECHECK_SECONDS + 1)  # the processor is stopped: every message is visible
    status_of = {item["order_id"]["S"]: item["status"]["S"] for item in records}
    for order_id in _dead_lettered_order_ids(sqs, dlq_url):
        if status_of.get(order_id) != "FAILED":
            violations.append(f"{order_id}: in the DLQ, {status_of.get(order_id, 'no record')}")
    main_url = sqs.get_queue_url(QueueName=pipeline.queue_name)["QueueUrl"]
    main = sqs.get_queue_attributes(
        QueueUrl=main_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]

    counts = {
        "orders": len(placed),
        "accepted": sum(o.accepted for o in placed),
        "client_attempts": sum(o.attempts for o in placed),
        "records": len(records),
        **{f"status_{k}": v for k, v in statuses.items()},
        "charges": len(ledger),
        "refunds": len(refunded),
        "dlq_messages": dlq_depth,
        "queue_messages_left": sum(int(v) for v in main.values()),
        "violations": len(violations),
    }
    return SoakReport(counts=counts, violations=violations)


def _dead_lettered_order_ids(sqs: Any, dlq_url: str) -> set[str]:
    """The order ids of every message in the DLQ (each received once, then hidden)."""
    found: set[str] = set()
    while True:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            try:
                found.add(json.loads(message["Body"])["order_id"])
            except (ValueError, KeyError):
                found.add(f"(unparseable message {message['MessageId']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--fault-probability", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--logs", type=Path, default=Path(".run/chaos"), help="services' logs")
    args = parser.parse_args(argv)
    settings = SoakSettings(
        orders=args.orders,
        fault_probability=args.fault_probability,
        seed=args.seed,
        drain_timeout=max(240.0, args.orders / 20),
    )
    for variable, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(variable, value)
    engines.ensure_installed()
    with (
        tempfile.TemporaryDirectory() as scratch,
        engines.running_engines(Path(scratch) / "engines", persistent=True) as running,
    ):
        pipeline = local.LocalPipeline(
            sqs_endpoint=running.sqs_endpoint,
            dynamodb_endpoint=running.dynamodb_endpoint,
            queue_name="chaos",
            table_prefix="chaos-",
        )
        provision.provision(
            pipeline.aws_settings(),
            queue=schema.QueueConfig(visibility_timeout_seconds=5, max_receive_count=5),
            catalog=SKUS,
        )
        shutil.rmtree(args.logs, ignore_errors=True)
        report = run_soak(running, pipeline, args.logs, settings)
        print(f"services' logs: {args.logs}", flush=True)
    report.print()
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
