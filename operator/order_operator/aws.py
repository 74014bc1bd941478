"""The only module that talks to AWS (SQS and DynamoDB, or the local engines), with boto3.

Queues: the DLQ first, then the main queue with a redrive policy naming the DLQ's ARN.
Attributes are compared canonically (SQS returns strings, policies are JSON with any key
order), so a converged queue is never written again. Every queue and table carries owner tags
(the OrderPipeline's namespace/name and uid, see `decide.owner_tags`): what is not tagged as a
pipeline's own is never changed or deleted for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import boto3
import botocore.config
import botocore.exceptions

from order_common import schema
from order_operator.scaling import QueueDepth
from order_operator.v1alpha1 import spec as v1alpha1

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

OWNER_TAG = "order-pipeline.dev/owner"
"""The owning OrderPipeline's `<namespace>/<name>`."""
OWNER_UID_TAG = "order-pipeline.dev/owner-uid"
"""The owning OrderPipeline's uid: a later OrderPipeline of the same name is another owner."""

# Error codes that mean "this request will never succeed as it is": report, do not retry fast.
_REJECTION_CODES = frozenset(
    {
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "ValidationException",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "QueueAlreadyExists",
        "QueueNameExists",
    }
)


class AwsRejected(Exception):
    """AWS refused the spec (invalid attribute, access denied, ...): a spec or setup problem."""


class Transient(Exception):
    """The engine could not be reached or answered with a retryable error."""


@dataclass(frozen=True)
class QueueInfo:
    url: str
    arn: str
    dlq_url: str
    dlq_arn: str


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class Clients:
    sqs: SQSClient
    dynamodb: DynamoDBClient


def make_clients(aws: v1alpha1.AwsSpec, credentials: Credentials | None) -> Clients:
    config = botocore.config.Config(
        region_name=aws.region,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=3,
        read_timeout=10,
    )
    session = (
        boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            region_name=aws.region,
        )
        if credentials is not None
        else boto3.session.Session(region_name=aws.region)
    )
    return Clients(
        sqs=session.client("sqs", endpoint_url=aws.endpoints.sqs, config=config),
        dynamodb=session.client("dynamodb", endpoint_url=aws.endpoints.dynamodb, config=config),
    )


def _translate(error: Exception, action: str) -> Exception:
    if isinstance(error, botocore.exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code in _REJECTION_CODES:
            return AwsRejected(f"{action}: {code}: {message}")
        return Transient(f"{action}: {code or 'error'}: {message}")
    return Transient(f"{action}: {error}")


def canonical_attributes(attributes: Mapping[str, str]) -> dict[str, Any]:
    """Attributes as comparable values: numbers as ints, JSON policies parsed (key order and
    number-vs-string differences vanish)."""
    canonical: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in ("RedrivePolicy", "RedriveAllowPolicy", "Policy"):
            parsed = json.loads(value) if value else {}
            canonical[key] = {
                name: int(item) if isinstance(item, str) and item.isdigit() else item
                for name, item in parsed.items()
            }
        elif isinstance(value, str) and value.lstrip("-").isdigit():
            canonical[key] = int(value)
        else:
            canonical[key] = value
    return canonical


def attributes_to_change(desired: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, str]:
    """The desired attributes whose canonical value differs from the queue's.

    An attribute the queue does not report at all is left alone: some engines (ElasticMQ and
    MessageRetentionPeriod) accept it on create but never return it, and re-sending it on every
    pass would be exactly the endless update loop this comparison exists to prevent.
    """
    wanted = canonical_attributes(desired)
    have = canonical_attributes({key: actual[key] for key in desired if key in actual})
    return {key: desired[key] for key in desired if key in have and wanted[key] != have[key]}


def dlq_attributes(queue: v1alpha1.QueueSpec) -> dict[str, str]:
    return {"MessageRetentionPeriod": str(queue.dlq_retention_seconds)}


def queue_attributes(queue: v1alpha1.QueueSpec, dlq_arn: str) -> dict[str, str]:
    return {
        "VisibilityTimeout": str(queue.visibility_timeout_seconds),
        "MessageRetentionPeriod": str(queue.retention_seconds),
        "DelaySeconds": str(queue.delay_seconds),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count},
            sort_keys=True,
        ),
    }


_QUEUE_GONE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def _find_queue(sqs: SQSClient, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in _QUEUE_GONE:
            return None
        raise


@dataclass(frozen=True)
class ObservedQueue:
    """A queue as it exists: where it is, its tags and its attributes (all as SQS returns them)."""

    url: str
    tags: Mapping[str, str]
    attributes: Mapping[str, str]


@dataclass(frozen=True)
class ObservedQueues:
    """The DLQ and the main queue of one spec; None where the queue does not exist."""

    dlq: ObservedQueue | None
    main: ObservedQueue | None


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Boto errors inside become AwsRejected or Transient, saying what was being done."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise _translate(error, action) from error


def converging_queue(queue: v1alpha1.QueueSpec) -> str:
    """What reads and writes of a spec's queues are reported as when they fail."""
    return f"converging queue {queue.name}"


def _observe_queue(sqs: SQSClient, name: str) -> ObservedQueue | None:
    url = _find_queue(sqs, name)
    if url is None:
        return None
    tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get(
        "Attributes", {}
    )
    return ObservedQueue(
        url=url, tags=dict(tags), attributes=cast(Mapping[str, str], dict(attributes))
    )


def observe_queues(sqs: SQSClient, queue: v1alpha1.QueueSpec) -> ObservedQueues:
    with translated(converging_queue(queue)):
        return ObservedQueues(
            dlq=_observe_queue(sqs, queue.dlq_name), main=_observe_queue(sqs, queue.name)
        )


# The writes below raise boto errors as they are: callers wrap them in `translated`.


def create_queue(
    sqs: SQSClient, name: str, attributes: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    url = sqs.create_queue(QueueName=name, Attributes=cast(Any, attributes), tags=dict(tags))[
        "QueueUrl"
    ]
    logger.info("created queue %s", name)
    return url


def set_queue_attributes(sqs: SQSClient, name: str, url: str, changes: Mapping[str, str]) -> None:
    sqs.set_queue_attributes(QueueUrl=url, Attributes=cast(Any, changes))
    logger.info("updated queue %s attributes %s", name, sorted(changes))


def tag_queue(sqs: SQSClient, url: str, tags: Mapping[str, str]) -> None:
    sqs.tag_queue(QueueUrl=url, Tags=dict(tags))


def queue_arn(sqs: SQSClient, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def queue_depth(sqs: SQSClient, url: str) -> QueueDepth:
    with translated("reading queue depth"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=list(_DEPTH_ATTRIBUTES),  # type: ignore[arg-type]
        ).get("Attributes", {})
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
    )


def delete_queues(sqs: SQSClient, urls: Sequence[str]) -> None:
    """Delete the queues in order (the main queue before its DLQ, so nothing redrives into a
    missing DLQ); one already gone is fine."""
    with translated("deleting queues"):
        for url in urls:
            try:
                sqs.delete_queue(QueueUrl=url)
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code", "") not in _QUEUE_GONE:
                    raise
            logger.info("deleted queue %s", url)


@dataclass(frozen=True)
class ObservedTable:
    """One of the spec's tables as it exists."""

    name: str
    exists: bool
    status: str | None
    ttl_status: str | None = None
    """Only read for ACTIVE tables whose schema has a TTL attribute; None otherwise."""
    ttl_attribute: str | None = None
    arn: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


def _table_tags(dynamodb: DynamoDBClient, arn: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    pages: dict[str, str] = {}
    while True:
        page = dynamodb.list_tags_of_resource(ResourceArn=arn, **pages)
        tags.update({tag["Key"]: tag["Value"] for tag in page.get("Tags", [])})
        if "NextToken" not in page:
            return tags
        pages = {"NextToken": page["NextToken"]}


def _observe_table(dynamodb: DynamoDBClient, table: schema.Table, name: str) -> ObservedTable:
    try:
        description = dynamodb.describe_table(TableName=name)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        return ObservedTable(name=name, exists=False, status=None)
    status, arn = description.get("TableStatus"), description["TableArn"]
    tags = _table_tags(dynamodb, arn)
    if status != "ACTIVE" or table.ttl_attribute is None:
        return ObservedTable(name=name, exists=True, status=status, arn=arn, tags=tags)
    ttl = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    return ObservedTable(
        name=name,
        exists=True,
        status=status,
        ttl_status=ttl.get("TimeToLiveStatus"),
        ttl_attribute=ttl.get("AttributeName"),
        arn=arn,
        tags=tags,
    )


CONVERGING_TABLES = "converging tables"
"""What reads and writes of the tables are reported as when they fail."""


def observe_tables(
    dynamodb: DynamoDBClient, tables: v1alpha1.TablesSpec
) -> tuple[ObservedTable, ...]:
    """The spec's tables in schema order."""
    with translated(CONVERGING_TABLES):
        return tuple(
            _observe_table(dynamodb, table, table.name(tables.prefix)) for table in schema.TABLES
        )


def _tag_list(tags: Mapping[str, str]) -> list[Any]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def create_table(dynamodb: DynamoDBClient, name: str, key: str, tags: Mapping[str, str]) -> None:
    """On-demand billing, one string hash key (the services' schema), tagged as it is created."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=_tag_list(tags),
    )
    logger.info("created table %s", name)


def tag_table(dynamodb: DynamoDBClient, name: str, arn: str, tags: Mapping[str, str]) -> None:
    dynamodb.tag_resource(ResourceArn=arn, Tags=_tag_list(tags))
    logger.info("tagged table %s %s", name, sorted(tags))


def enable_ttl(dynamodb: DynamoDBClient, name: str, attribute: str) -> None:
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
    )


def delete_tables(dynamodb: DynamoDBClient, names: Sequence[str]) -> None:
    with translated("deleting tables"):
        for name in names:
            try:
                dynamodb.delete_table(TableName=name)
                logger.info("deleted table %s", name)
            except dynamodb.exceptions.ResourceNotFoundException:
                continue
