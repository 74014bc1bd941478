"""The lean JSON-protocol client answers and fails exactly as the aiobotocore client does.

Against the real ElasticMQ (results, modelled errors) and a loopback HTTP server that answers
what a struggling service answers (retries, signing).
"""

from __future__ import annotations

import contextlib
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError
from types_aiobotocore_dynamodb import DynamoDBClient
from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef
from types_aiobotocore_sqs import SQSClient
from types_aiobotocore_sqs.type_defs import (
    MessageAttributeValueTypeDef,
    SendMessageBatchRequestEntryTypeDef,
)

from order_common import aws
from order_common import settings as settings_module
from order_devtools import engines, local

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def sqs_clients(
    settings: settings_module.AwsSettings,
) -> AsyncIterator[tuple[SQSClient, aws.SqsHotPath]]:
    """The SDK client and the lean one on the same endpoint, made as the services make them."""
    async with (
        aws.sqs_client(settings) as sdk,
        aws.sqs_hot_path(sdk, settings, read_timeout=10) as hot,
    ):
        yield sdk, hot


@contextlib.asynccontextmanager
async def dynamodb_clients(
    settings: settings_module.AwsSettings,
) -> AsyncIterator[tuple[DynamoDBClient, aws.DynamoDbHotPath]]:
    async with aws.dynamodb_client(settings) as sdk, aws.dynamodb_hot_path(sdk, settings) as hot:
        yield sdk, hot


@pytest.fixture
def sqs_settings(local_engines: engines.Engines) -> settings_module.AwsSettings:
    return settings_module.AwsSettings(sqs_endpoint_url=local_engines.sqs_endpoint)


async def test_send_receive_delete_return_what_the_sdk_returns(
    sqs_settings: settings_module.AwsSettings,
) -> None:
    async with sqs_clients(sqs_settings) as (sdk, hot):
        url = (await sdk.create_queue(QueueName=f"json-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            "request_id": {"DataType": "String", "StringValue": "req-1"}
        }
        sent = await hot.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "a", "MessageBody": '{"n": 1}', "MessageAttributes": attributes},
                {"Id": "b", "MessageBody": "ünïcode ✓"},
            ],
        )
        assert sorted(e["Id"] for e in sent["Successful"]) == ["a", "b"]
        assert not sent.get("Failed")
        sdk_sent = await sdk.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "c", "MessageBody": "from the sdk"}]
        )
        plain = next(e for e in sent["Successful"] if e["Id"] == "b")  # no attributes, as "c"
        assert set(plain) == set(sdk_sent["Successful"][0])

        received = await hot.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        by_body = {m["Body"]: m for m in received["Messages"]}
        assert set(by_body) == {'{"n": 1}', "ünïcode ✓", "from the sdk"}
        first = by_body['{"n": 1}']
        assert first["MessageAttributes"]["request_id"]["StringValue"] == "req-1"
        assert first["Attributes"]["ApproximateReceiveCount"] == "1"
        assert first["MessageId"] == next(
            e["MessageId"] for e in sent["Successful"] if e["Id"] == "a"
        )

        deleted = await hot.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(received["Messages"])
            ],
        )
        assert len(deleted["Successful"]) == 3
        left = await sdk.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        assert left["Attributes"] == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }


async def test_a_service_error_raises_the_sdks_modelled_exception(
    sqs_settings: settings_module.AwsSettings,
) -> None:
    async with sqs_clients(sqs_settings) as (sdk, hot):
        missing = f"{sqs_settings.sqs_endpoint_url}/000000000000/missing-{uuid.uuid4().hex[:8]}"
        entries: list[SendMessageBatchRequestEntryTypeDef] = [{"Id": "a", "MessageBody": "x"}]
        with pytest.raises(ClientError) as from_sdk:
            await sdk.send_message_batch(QueueUrl=missing, Entries=entries)
        with pytest.raises(ClientError) as from_hot:
            await hot.send_message_batch(QueueUrl=missing, Entries=entries)
        assert type(from_hot.value) is type(from_sdk.value)
        assert from_hot.value.response["Error"]["Code"] == from_sdk.value.response["Error"]["Code"]
        assert from_hot.value.operation_name == "SendMessageBatch"


async def test_an_unreachable_endpoint_raises_the_sdks_connection_error() -> None:
    closed = settings_module.AwsSettings(sqs_endpoint_url=f"http://127.0.0.1:{local.free_port()}")
    async with sqs_clients(closed) as (_, hot):
        with pytest.raises(EndpointConnectionError):
            await hot.send_message_batch(QueueUrl="q", Entries=[{"Id": "a", "MessageBody": "x"}])


class FlakyService:
    """Loopback HTTP server answering each request with the next of `statuses` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[Mapping[str, str]] = []  # each request's headers (any case)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.headers)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            return web.json_response({"Successful": [{"Id": "a", "MessageId": "m"}]})
        body = {"__type": "com.amazonaws.sqs#InternalError", "message": "try again"}
        if status == 400:
            body = {"__type": "com.amazonaws.sqs#InvalidAddress", "message": "bad address"}
        return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def loopback_service(
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """An HTTP server on loopback answering every POST with `handle`; yields its URL."""
    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = local.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def flaky_service(statuses: list[int]) -> AsyncIterator[tuple[FlakyService, str]]:
    service = FlakyService(statuses)
    async with loopback_service(service.handle) as endpoint:
        yield service, endpoint


async def test_server_errors_are_retried_as_the_sdks_standard_mode_does() -> None:
    async with (
        flaky_service([500, 503]) as (service, endpoint),
        sqs_clients(settings_module.AwsSettings(sqs_endpoint_url=endpoint)) as (_, hot),
    ):
        result = await hot.send_message_batch(
            QueueUrl="q", Entries=[{"Id": "a", "MessageBody": "x"}]
        )
    assert result["Successful"] == [{"Id": "a", "MessageId": "m"}]
    assert len(service.requests) == 3  # two failures, then the answer


async def test_client_errors_are_not_retried_and_requests_are_signed() -> None:
    async with (
        flaky_service([400]) as (service, endpoint),
        sqs_clients(
            settings_module.AwsSettings(sqs_endpoint_url=endpoint, aws_region="eu-west-1")
        ) as (_, hot),
    ):
        with pytest.raises(ClientError) as failed:
            await hot.send_message_batch(QueueUrl="q", Entries=[{"Id": "a", "MessageBody": "x"}])
    assert failed.value.response["Error"]["Code"] == "InvalidAddress"
    assert len(service.requests) == 1
    headers = service.requests[0]
    assert headers["X-Amz-Target"] == "AmazonSQS.SendMessageBatch"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=local/")
    assert "/eu-west-1/sqs/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers
    assert headers["Host"] == endpoint.removeprefix("http://")  # the Host sent is the one signed


async def test_dynamodb_reads_writes_and_cancelled_transactions_match_the_sdk(
    local_engines: engines.Engines,
) -> None:
    settings = settings_module.AwsSettings(dynamodb_endpoint_url=local_engines.dynamodb_endpoint)
    table = f"json-{uuid.uuid4().hex[:8]}"
    async with dynamodb_clients(settings) as (sdk, hot):
        await sdk.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        item = {"pk": {"S": "a"}, "n": {"N": "7"}, "tags": {"L": [{"S": "x"}, {"BOOL": True}]}}
        await hot.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"
        )
        assert (await hot.get_item(TableName=table, Key={"pk": {"S": "a"}}))["Item"] == (
            await sdk.get_item(TableName=table, Key={"pk": {"S": "a"}})
        )["Item"]
        # Binary attributes (blob members) travel base64-encoded, as bytes on both sides.
        binary: Any = {"pk": {"S": "bin"}, "raw": {"B": b"\x00\xff"}, "set": {"BS": [b"\x01"]}}
        await hot.put_item(TableName=table, Item=binary)
        read = (await hot.get_item(TableName=table, Key={"pk": {"S": "bin"}}))["Item"]
        assert read == (await sdk.get_item(TableName=table, Key={"pk": {"S": "bin"}}))["Item"]
        assert read["raw"] == {"B": b"\x00\xff"}
        with pytest.raises(hot.exceptions.ConditionalCheckFailedException):
            await hot.put_item(
                TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        await hot.batch_write_item(
            RequestItems={table: [{"PutRequest": {"Item": {"pk": {"S": "b"}}}}]}
        )
        found = await hot.batch_get_item(
            RequestItems={table: {"Keys": [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}]}}
        )
        assert sorted(i["pk"]["S"] for i in found["Responses"][table]) == ["a", "b"]

        clashing: list[TransactWriteItemTypeDef] = [
            {"Put": {"TableName": table, "Item": {"pk": {"S": "c"}}}},
            {
                "Put": {
                    "TableName": table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        with pytest.raises(sdk.exceptions.TransactionCanceledException) as from_sdk:
            await sdk.transact_write_items(TransactItems=clashing)
        with pytest.raises(hot.exceptions.TransactionCanceledException) as from_hot:
            await hot.transact_write_items(TransactItems=clashing)
        reasons = from_hot.value.response.get("CancellationReasons")
        assert reasons == from_sdk.value.response.get("CancellationReasons")
        assert [r["Code"] for r in reasons or []] == ["None", "ConditionalCheckFailed"]
        await sdk.delete_table(TableName=table)


async def test_a_dynamodb_answer_failing_its_crc32_is_retried() -> None:
    answers: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        body = b'{"Item":{"pk":{"S":"a"}}}'
        answers.append(body)
        crc = zlib.crc32(body) & 0xFFFFFFFF
        if len(answers) == 1:
            crc ^= 1  # corrupted on the way, as far as the client can tell
        return web.Response(body=body, headers={"x-amz-crc32": str(crc)})

    async with loopback_service(handle) as endpoint:
        settings = settings_module.AwsSettings(dynamodb_endpoint_url=endpoint)
        async with dynamodb_clients(settings) as (_, hot):
            item = await hot.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert item["Item"] == {"pk": {"S": "a"}}
    assert len(answers) == 2
