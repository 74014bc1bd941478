"""Create the queue, its DLQ and the tables on the local engines, and seed a demo catalog.

In a cluster the operator does this from an `OrderPipeline`; locally (`make run`, tests and
the benchmark) this module does it, idempotently, with the same names the services use.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config

from order_common import schema
from order_common import settings as common_settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

DEMO_CATALOG: Mapping[str, tuple[str, int, int]] = {
    # sku: (name, price in cents, stock)
    "SKU-TSHIRT": ("T-shirt", 1999, 1000),
    "SKU-MUG": ("Mug", 1299, 500),
    "SKU-HOODIE": ("Hoodie", 4999, 200),
    "SKU-STICKER": ("Sticker pack", 499, 10_000),
    "SKU-POSTER": ("Poster", 2499, 50),
    "SKU-LAPTOP": ("Laptop", 249_900, 20),
}


def _config(settings: common_settings.AwsSettings) -> botocore.config.Config:
    return botocore.config.Config(
        region_name=settings.aws_region, retries={"mode": "standard", "max_attempts": 5}
    )


def sqs_client(settings: common_settings.AwsSettings) -> SQSClient:
    return boto3.client("sqs", endpoint_url=settings.sqs_endpoint_url, config=_config(settings))


def dynamodb_client(settings: common_settings.AwsSettings) -> DynamoDBClient:
    return boto3.client(
        "dynamodb", endpoint_url=settings.dynamodb_endpoint_url, config=_config(settings)
    )


def create_queues(
    settings: common_settings.AwsSettings, queue: schema.QueueConfig = schema.QUEUE_DEFAULTS
) -> tuple[str, str]:
    """Create (or keep) the DLQ first, then the queue redriving to it; return both URLs."""
    sqs = sqs_client(settings)
    dlq_url = sqs.create_queue(
        QueueName=schema.dlq_name(settings.queue_name),
        Attributes={"MessageRetentionPeriod": str(queue.dlq_retention_seconds)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(QueueName=settings.queue_name)["QueueUrl"]
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={
            "VisibilityTimeout": str(queue.visibility_timeout_seconds),
            "MessageRetentionPeriod": str(queue.retention_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count}
            ),
        },
    )
    return url, dlq_url


def create_string_keyed_table(dynamodb: DynamoDBClient, name: str, *, key: str = "pk") -> None:
    """An on-demand table whose hash key `key` is a string, the shape of every pipeline table."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def create_tables(settings: common_settings.AwsSettings) -> None:
    dynamodb = dynamodb_client(settings)
    existing = set(dynamodb.list_tables()["TableNames"])
    for table in schema.TABLES:
        name = table.name(settings.table_prefix)
        if name in existing:
            continue
        create_string_keyed_table(dynamodb, name, key=table.key)
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        if table.ttl_attribute is not None:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )


def seed_catalog(
    settings: common_settings.AwsSettings,
    catalog: Mapping[str, tuple[str, int, int]] = DEMO_CATALOG,
    *,
    overwrite: bool = False,
    dynamodb: DynamoDBClient | None = None,
) -> None:
    """Write catalog entries; existing ones keep their stock unless `overwrite`. `dynamodb`:
    a client with its own credentials (else one from the environment's)."""
    dynamodb = dynamodb or dynamodb_client(settings)
    for sku, (name, price, stock) in catalog.items():
        item: dict[str, Any] = {
            "sku": {"S": sku},
            "name": {"S": name},
            "price_cents": {"N": str(price)},
            "stock": {"N": str(stock)},
        }
        if overwrite:
            dynamodb.put_item(TableName=settings.catalog_table, Item=item)
            continue
        # Already seeded: a re-run keeps the stock as orders left it.
        with contextlib.suppress(dynamodb.exceptions.ConditionalCheckFailedException):
            dynamodb.put_item(
                TableName=settings.catalog_table,
                Item=item,
                ConditionExpression="attribute_not_exists(sku)",
            )


def provision(
    settings: common_settings.AwsSettings,
    *,
    queue: schema.QueueConfig = schema.QUEUE_DEFAULTS,
    catalog: Mapping[str, tuple[str, int, int]] = DEMO_CATALOG,
) -> tuple[str, str]:
    """Everything a local pipeline needs; safe to run again."""
    urls = create_queues(settings, queue)
    create_tables(settings)
    seed_catalog(settings, catalog)
    return urls
