"""The one place that creates AWS clients (creating one costs ~1 s: once per process)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import aiobotocore.config
import aiobotocore.session

from order_common import settings as settings_module

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient


def _config(
    settings: settings_module.AwsSettings, *, read_timeout: float
) -> aiobotocore.config.AioConfig:
    return aiobotocore.config.AioConfig(
        region_name=settings.aws_region,
        max_pool_connections=settings.aws_max_pool_connections,
        connect_timeout=2,
        read_timeout=read_timeout,
        # Standard mode retries throttling and 5xx with jitter; our own code retries the rest.
        retries={"mode": "standard", "max_attempts": 3},
        # Requests are typed against the service models (mypy, types-aiobotocore) and the
        # service validates them again; checking each one here too costs CPU on every call.
        parameter_validation=False,
    )


def sqs_client(
    settings: settings_module.AwsSettings, *, read_timeout: float = 10
) -> contextlib.AbstractAsyncContextManager[SQSClient]:
    session = aiobotocore.session.get_session()
    return session.create_client(
        "sqs",
        endpoint_url=settings.sqs_endpoint_url,
        config=_config(settings, read_timeout=read_timeout),
    )


def dynamodb_client(
    settings: settings_module.AwsSettings, *, read_timeout: float = 10
) -> contextlib.AbstractAsyncContextManager[DynamoDBClient]:
    session = aiobotocore.session.get_session()
    return session.create_client(
        "dynamodb",
        endpoint_url=settings.dynamodb_endpoint_url,
        config=_config(settings, read_timeout=read_timeout),
    )
