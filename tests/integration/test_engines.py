"""The local engines behave like SQS and DynamoDB where the pipeline depends on it.

Real boto3 calls against ElasticMQ and Dynoxide started by `order_devtools.engines`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_sqs import SQSClient
from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

from order_devtools import engines as local_engines
from order_devtools import processes, provision

pytestmark = pytest.mark.integration

MAX_RECEIVE_COUNT = 3


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_engines.Engines]:
    state_dir = tmp_path_factory.mktemp("engines")
    with local_engines.running_engines(state_dir, persistent=True) as running:
        yield running


@pytest.fixture
def sqs(engines: local_engines.Engines) -> SQSClient:
    return engines.sqs_client()


@pytest.fixture
def dynamodb(engines: local_engines.Engines) -> DynamoDBClient:
    return engines.dynamodb_client()


@pytest.fixture
def make_queue_with_dlq(sqs: SQSClient) -> Callable[..., tuple[str, str]]:
    """Factory: a fresh queue whose RedrivePolicy points at a fresh DLQ; returns both URLs."""

    def make(*, visibility_timeout: int = 0) -> tuple[str, str]:
        name = f"orders-{uuid.uuid4().hex[:8]}"
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        queue_url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "RedrivePolicy": json.dumps(redrive),
                "VisibilityTimeout": str(visibility_timeout),
            },
        )["QueueUrl"]
        return queue_url, dlq_url

    return make


@pytest.fixture
def make_table(dynamodb: DynamoDBClient) -> Callable[[], str]:
    def make() -> str:
        name = f"orders-{uuid.uuid4().hex[:8]}"
        provision.create_string_keyed_table(dynamodb, name)
        return name

    return make


def _receive_all(sqs: SQSClient, queue_url: str, *, attempts: int = 5) -> list[str]:
    # ElasticMQ answers an empty receive with "Messages": [] where AWS omits the key.
    bodies: list[str] = []
    for _ in range(attempts):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        bodies.extend(message["Body"] for message in messages)
    return bodies


def _keys(dynamodb: DynamoDBClient, table: str) -> set[str]:
    return {
        item["pk"]["S"] for item in dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    }


def test_queue_urls_point_at_the_loopback_endpoint(
    engines: local_engines.Engines, make_queue_with_dlq: Callable[..., tuple[str, str]]
) -> None:
    queue_url, _ = make_queue_with_dlq()

    assert queue_url.startswith(f"{engines.sqs_endpoint}/")


def test_message_moves_to_dlq_after_exactly_max_receive_count(
    sqs: SQSClient, make_queue_with_dlq: Callable[..., tuple[str, str]]
) -> None:
    queue_url, dlq_url = make_queue_with_dlq(visibility_timeout=0)
    sqs.send_message(QueueUrl=queue_url, MessageBody="poison")

    receive_counts = []
    for _ in range(MAX_RECEIVE_COUNT):
        (message,) = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["ApproximateReceiveCount"]
        )["Messages"]
        receive_counts.append(int(message["Attributes"]["ApproximateReceiveCount"]))
        assert not _receive_all(sqs, dlq_url, attempts=1)

    assert receive_counts == [1, 2, 3]
    assert not _receive_all(sqs, queue_url, attempts=1)
    assert _receive_all(sqs, dlq_url, attempts=1) == ["poison"]


def test_send_message_batch_of_ten_is_received_and_deleted(
    sqs: SQSClient, make_queue_with_dlq: Callable[..., tuple[str, str]]
) -> None:
    queue_url, _ = make_queue_with_dlq(visibility_timeout=30)
    entries: list[SendMessageBatchRequestEntryTypeDef] = [
        {"Id": str(index), "MessageBody": f"order-{index}"} for index in range(10)
    ]

    sent = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    deleted = sqs.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(received)
        ],
    )

    assert len(sent["Successful"]) == 10
    assert sorted(message["Body"] for message in received) == sorted(
        entry["MessageBody"] for entry in entries
    )
    assert len(deleted["Successful"]) == 10
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_queues_and_messages_survive_an_engine_restart(
    engines: local_engines.Engines,
    sqs: SQSClient,
    make_queue_with_dlq: Callable[..., tuple[str, str]],
) -> None:
    queue_url, dlq_url = make_queue_with_dlq(visibility_timeout=60)
    bodies = [f"accepted-{index}" for index in range(25)]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": body}
                for index, body in enumerate(bodies[start : start + 10])
            ],
        )
    old_pid = engines.sqs.pid

    engines.sqs.stop()
    engines.sqs.start()

    assert engines.sqs.pid != old_pid
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert redrive["deadLetterTargetArn"].endswith(dlq_url.rsplit("/", 1)[1])
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
    assert sorted(_receive_all(sqs, queue_url)) == sorted(bodies)


def test_dynoxide_runs_on_jemalloc(engines: local_engines.Engines) -> None:
    """`make` installs libjemalloc2; the engine must really use it (its allocator held a
    quarter of its CPU on the C library's)."""
    assert engines.dynamodb.pid is not None
    maps = Path(f"/proc/{engines.dynamodb.pid}/maps").read_text()
    assert "libjemalloc.so.2" in maps


def test_conditional_put_rejects_a_duplicate(
    dynamodb: DynamoDBClient, make_table: Callable[[], str]
) -> None:
    table = make_table()
    item = {"pk": {"S": "order-1"}, "status": {"S": "IN_PROGRESS"}}
    dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")

    with pytest.raises(ClientError) as rejected:
        dynamodb.put_item(
            TableName=table,
            Item={**item, "status": {"S": "COMPLETED"}},
            ConditionExpression="attribute_not_exists(pk)",
        )

    assert rejected.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    stored = dynamodb.get_item(TableName=table, Key={"pk": {"S": "order-1"}}, ConsistentRead=True)
    assert stored["Item"]["status"]["S"] == "IN_PROGRESS"


def test_transaction_writes_all_items_or_none(
    dynamodb: DynamoDBClient, make_table: Callable[[], str]
) -> None:
    table = make_table()
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": key}}}} for key in ("a", "b")
        ]
    )

    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "c"}}}},
                {
                    "Put": {
                        "TableName": table,
                        "Item": {"pk": {"S": "a"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [reason["Code"] for reason in cancelled.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed"]
    assert _keys(dynamodb, table) == {"a", "b"}


def test_tables_and_items_survive_an_engine_restart(
    engines: local_engines.Engines, dynamodb: DynamoDBClient, make_table: Callable[[], str]
) -> None:
    table = make_table()
    dynamodb.batch_write_item(
        RequestItems={
            table: [
                {"PutRequest": {"Item": {"pk": {"S": f"order-{index}"}}}} for index in range(20)
            ]
        }
    )

    engines.dynamodb.stop()
    engines.dynamodb.start()

    assert _keys(dynamodb, table) == {f"order-{index}" for index in range(20)}


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # Connecting a UDP socket sends nothing; it only picks the outgoing interface.
            probe.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_engines_accept_connections_on_loopback_only(engines: local_engines.Engines) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")

    for engine in engines.all():
        with socket.create_connection(("127.0.0.1", engine.port), timeout=2):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, engine.port), timeout=2).close()


def test_a_port_taken_before_the_engine_binds_is_replaced_when_we_picked_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = squatter.getsockname()[1]
        free_ports = iter([taken_port])
        real_pick = processes.free_port
        monkeypatch.setattr(processes, "free_port", lambda host: next(free_ports, real_pick(host)))
        # Let the pre-check pass once, as when another process binds in between.
        pre_checks = iter([True])
        monkeypatch.setattr(processes, "port_is_free", lambda port, host: next(pre_checks, True))
        engine = local_engines.elasticmq_process(tmp_path, port=0, persistent=False)

        try:
            engine.start()
            assert engine.port != taken_port
            assert "Address already in use" in engine.log_path.read_text()
            with socket.create_connection(("127.0.0.1", engine.port), timeout=2):
                pass
        finally:
            engine.stop()


def test_an_explicit_port_that_is_taken_fails_fast(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        engine = local_engines.elasticmq_process(
            tmp_path, port=squatter.getsockname()[1], persistent=False
        )

        with pytest.raises(local_engines.PortTakenError):
            engine.start()
        assert engine.pid is None


_ORPHANING_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from order_devtools import engines

    with engines.running_engines(Path(sys.argv[1]), persistent=False) as running:
        print(running.sqs.pid, running.dynamodb.pid, flush=True)
        time.sleep(600)
    """
)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until something reaps it; it runs nothing any more.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_engines_die_when_their_parent_is_killed(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert runner.stdout is not None
        engine_pids = [int(pid) for pid in runner.stdout.readline().split()]
        assert len(engine_pids) == 2
        assert all(_is_alive(pid) for pid in engine_pids)

        runner.send_signal(signal.SIGKILL)
        runner.wait()

        deadline = time.monotonic() + 20
        while any(_is_alive(pid) for pid in engine_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_is_alive(pid) for pid in engine_pids)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_engines_bound_to_another_address_listen_there_only(tmp_path: Path) -> None:
    """The test cluster's real pods reach the engines on its bridge address; 127.0.0.2 (also
    this host, yet not 127.0.0.1) stands in for it here."""
    host = "127.0.0.2"
    with local_engines.running_engines(tmp_path, persistent=False, host=host) as running:
        for engine in running.all():
            assert engine.endpoint == f"http://{host}:{engine.port}"
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((processes.LOOPBACK_HOST, engine.port), timeout=2)
        # Queue URLs name the address clients must use.
        queue_url = running.sqs_client().create_queue(QueueName="elsewhere")["QueueUrl"]
        assert queue_url.startswith(f"http://{host}:{running.sqs.port}/")
        assert "TableNames" in running.dynamodb_client().list_tables()
