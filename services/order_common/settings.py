"""Settings shared by every component: where the queue and the tables are.

Endpoints default to botocore's own resolution, so `AWS_ENDPOINT_URL_SQS` /
`AWS_ENDPOINT_URL_DYNAMODB` (or nothing, on AWS) work unchanged; the explicit fields exist so
tests and `make run` can point one process at one set of engines.
"""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
import pydantic_settings

from order_common import contract, schema

Version = Annotated[str, pydantic.StringConstraints(pattern=contract.VERSION_PATTERN)]

Track = Literal["stable", "canary"]


class ReleaseSettings(pydantic_settings.BaseSettings):
    """Which release this process is, as a canary rollout tells them apart: every metric it
    exports carries both as the `version` and `track` labels."""

    model_config = pydantic_settings.SettingsConfigDict(extra="ignore", frozen=True)

    app_version: Version = "dev"
    """The revision of the pod template this process runs (the operator sets it)."""

    rollout_track: Track = "stable"
    """`canary` in a canary Deployment's pods, `stable` everywhere else."""


class AwsSettings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(extra="ignore", frozen=True)

    aws_region: str = "us-east-1"
    """AWS region of the queue and the tables."""

    sqs_endpoint_url: str | None = None
    """SQS endpoint override (local engine); None lets botocore resolve it."""

    dynamodb_endpoint_url: str | None = None
    """DynamoDB endpoint override (local engine); None lets botocore resolve it."""

    queue_name: str = "orders"
    """Name of the orders queue; its DLQ is found through the queue's redrive policy."""

    table_prefix: str = ""
    """Prefix for every table name, so several pipelines can share one account."""

    aws_max_pool_connections: int = pydantic.Field(default=50, ge=1)
    """HTTP connections each AWS client keeps; bounds concurrent calls per process."""

    @property
    def orders_table(self) -> str:
        return schema.ORDERS.name(self.table_prefix)

    @property
    def catalog_table(self) -> str:
        return schema.CATALOG.name(self.table_prefix)

    @property
    def idempotency_table(self) -> str:
        return schema.IDEMPOTENCY.name(self.table_prefix)

    @property
    def velocity_table(self) -> str:
        return schema.VELOCITY.name(self.table_prefix)

    @property
    def payments_table(self) -> str:
        return schema.PAYMENTS.name(self.table_prefix)
