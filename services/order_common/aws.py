"""The one place that creates AWS clients (creating one costs ~1 s: once per process)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Unpack, cast

import aiobotocore.config
import aiobotocore.session
from botocore import exceptions as botocore_exceptions

from order_common import aws_json, tracing
from order_common import settings as settings_module

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        BatchGetItemInputTypeDef,
        BatchGetItemOutputTypeDef,
        BatchWriteItemInputTypeDef,
        BatchWriteItemOutputTypeDef,
        GetItemInputTypeDef,
        GetItemOutputTypeDef,
        PutItemInputTypeDef,
        PutItemOutputTypeDef,
        TransactWriteItemsInputTypeDef,
        TransactWriteItemsOutputTypeDef,
        UpdateItemInputTypeDef,
        UpdateItemOutputTypeDef,
    )
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        DeleteMessageBatchRequestTypeDef,
        DeleteMessageBatchResultTypeDef,
        ReceiveMessageRequestTypeDef,
        ReceiveMessageResultTypeDef,
        SendMessageBatchRequestTypeDef,
        SendMessageBatchResultTypeDef,
    )

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 10  # unless a caller waits longer on purpose (long polls, sends)
MAX_ATTEMPTS = 3  # per call, in botocore's standard retry mode (throttling, 5xx, transport)


def _config(
    settings: settings_module.AwsSettings, *, read_timeout: float
) -> aiobotocore.config.AioConfig:
    return aiobotocore.config.AioConfig(
        region_name=settings.aws_region,
        max_pool_connections=settings.aws_max_pool_connections,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout,
        # Standard mode retries throttling and 5xx with jitter; our own code retries the rest.
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        # Requests are typed against the service models (mypy, types-aiobotocore) and the
        # service validates them again; checking each one here too costs CPU on every call.
        parameter_validation=False,
    )


@contextlib.asynccontextmanager
async def sqs_client(
    settings: settings_module.AwsSettings, *, read_timeout: float = READ_TIMEOUT_SECONDS
) -> AsyncIterator[SQSClient]:
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=settings.sqs_endpoint_url,
        config=_config(settings, read_timeout=read_timeout),
    ) as client:
        _trace_calls(client)
        yield client


@contextlib.asynccontextmanager
async def dynamodb_client(
    settings: settings_module.AwsSettings, *, read_timeout: float = READ_TIMEOUT_SECONDS
) -> AsyncIterator[DynamoDBClient]:
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "dynamodb",
        endpoint_url=settings.dynamodb_endpoint_url,
        config=_config(settings, read_timeout=read_timeout),
    ) as client:
        _trace_calls(client)
        yield client


_TRACE_KEY = "order_pipeline_trace"
"""Where a call's start and parameters wait in botocore's per-call context for its end."""


def _trace_calls(client: SQSClient | DynamoDBClient) -> None:
    """A CLIENT span per call of an aiobotocore client, as the lean client records them
    (`tracing.record_aws_call`), through botocore's event hooks; none when tracing is off."""
    if not tracing.enabled:
        return
    endpoint = tracing.AwsEndpoint.of(
        service=client.meta.service_model.service_id,
        region=client.meta.region_name,
        endpoint_url=client.meta.endpoint_url,
    )

    def started(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_TRACE_KEY] = (time.time_ns(), params)

    def answered(
        http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        start, params = context.pop(_TRACE_KEY, (time.time_ns(), {}))
        failed = http_response.status_code >= 300
        tracing.record_aws_call(
            endpoint,
            model.name,
            params,
            started=start,
            result=None if failed else parsed,
            error=parsed.get("Error", {}).get("Code", "_OTHER") if failed else None,
        )

    def broke(exception: Exception, context: dict[str, Any], event_name: str, **_: Any) -> None:
        start, params = context.pop(_TRACE_KEY, (time.time_ns(), {}))
        operation = event_name.rsplit(".", 1)[-1]
        tracing.record_aws_call(endpoint, operation, params, started=start, error=exception)

    events = client.meta.events
    events.register("before-parameter-build", started)
    events.register("after-call", answered)
    events.register("after-call-error", broke)


def surely_not_applied(error: BaseException) -> bool:
    """Whether a failed call certainly had no effect: the connection was never made, or the
    service answered with a client error (4xx: it refused the request). A timeout, a
    connection lost mid-answer or a server error (5xx) may follow an applied request, and the
    lean client raises those whenever any of its attempts ended that way."""
    if isinstance(
        error, botocore_exceptions.EndpointConnectionError | botocore_exceptions.ConnectTimeoutError
    ):
        return True
    if isinstance(error, botocore_exceptions.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        return 400 <= status < 500
    return False


class SqsHotPath:
    """The SQS calls made for every batch of orders, through the lean JSON-protocol client.

    Same signatures as the aiobotocore client's, so code written against one takes the other.
    """

    def __init__(self, client: aws_json.JsonProtocolClient) -> None:
        self._client = client

    async def send_message_batch(
        self, **kwargs: Unpack[SendMessageBatchRequestTypeDef]
    ) -> SendMessageBatchResultTypeDef:
        result = await self._client.call("SendMessageBatch", kwargs)
        return cast("SendMessageBatchResultTypeDef", result)

    async def receive_message(
        self, **kwargs: Unpack[ReceiveMessageRequestTypeDef]
    ) -> ReceiveMessageResultTypeDef:
        result = await self._client.call("ReceiveMessage", kwargs)
        return cast("ReceiveMessageResultTypeDef", result)

    async def delete_message_batch(
        self, **kwargs: Unpack[DeleteMessageBatchRequestTypeDef]
    ) -> DeleteMessageBatchResultTypeDef:
        result = await self._client.call("DeleteMessageBatch", kwargs)
        return cast("DeleteMessageBatchResultTypeDef", result)


class DynamoDbHotPath:
    """The DynamoDB calls made for every batch of orders, through the lean JSON-protocol client.

    Same signatures as the aiobotocore client's; `exceptions` are that client's, so
    `except hot.exceptions.TransactionCanceledException` catches what the SDK would raise.
    """

    def __init__(self, client: aws_json.JsonProtocolClient, sdk: DynamoDBClient) -> None:
        self._client = client
        self.exceptions = sdk.exceptions

    async def get_item(self, **kwargs: Unpack[GetItemInputTypeDef]) -> GetItemOutputTypeDef:
        return cast("GetItemOutputTypeDef", await self._client.call("GetItem", kwargs))

    async def put_item(self, **kwargs: Unpack[PutItemInputTypeDef]) -> PutItemOutputTypeDef:
        return cast("PutItemOutputTypeDef", await self._client.call("PutItem", kwargs))

    async def update_item(
        self, **kwargs: Unpack[UpdateItemInputTypeDef]
    ) -> UpdateItemOutputTypeDef:
        return cast("UpdateItemOutputTypeDef", await self._client.call("UpdateItem", kwargs))

    async def batch_get_item(
        self, **kwargs: Unpack[BatchGetItemInputTypeDef]
    ) -> BatchGetItemOutputTypeDef:
        result = await self._client.call("BatchGetItem", kwargs)
        return cast("BatchGetItemOutputTypeDef", result)

    async def batch_write_item(
        self, **kwargs: Unpack[BatchWriteItemInputTypeDef]
    ) -> BatchWriteItemOutputTypeDef:
        result = await self._client.call("BatchWriteItem", kwargs)
        return cast("BatchWriteItemOutputTypeDef", result)

    async def transact_write_items(
        self, **kwargs: Unpack[TransactWriteItemsInputTypeDef]
    ) -> TransactWriteItemsOutputTypeDef:
        result = await self._client.call("TransactWriteItems", kwargs)
        return cast("TransactWriteItemsOutputTypeDef", result)


@contextlib.asynccontextmanager
async def _json_protocol(
    client: SQSClient | DynamoDBClient,
    settings: settings_module.AwsSettings,
    *,
    read_timeout: float,
) -> AsyncIterator[aws_json.JsonProtocolClient]:
    """A lean client on `client`'s endpoint and region, with the same credentials."""
    session = aiobotocore.session.get_session()
    credentials = await session.get_credentials()
    json_client = aws_json.JsonProtocolClient.create(
        client,
        credentials,
        ca_bundle=session.get_config_variable("ca_bundle"),
        max_connections=settings.aws_max_pool_connections,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=read_timeout,
        max_attempts=MAX_ATTEMPTS,
    )
    try:
        yield json_client
    finally:
        await json_client.close()


@contextlib.asynccontextmanager
async def sqs_hot_path(
    client: SQSClient, settings: settings_module.AwsSettings, *, read_timeout: float
) -> AsyncIterator[SqsHotPath]:
    async with _json_protocol(client, settings, read_timeout=read_timeout) as json_client:
        yield SqsHotPath(json_client)


@contextlib.asynccontextmanager
async def dynamodb_hot_path(
    client: DynamoDBClient,
    settings: settings_module.AwsSettings,
    *,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> AsyncIterator[DynamoDbHotPath]:
    async with _json_protocol(client, settings, read_timeout=read_timeout) as json_client:
        yield DynamoDbHotPath(json_client, client)
