"""Pydantic models of an OrderPipeline's spec.

The apiserver already validated and defaulted the object against the CRD schema; these models
give the operator typed access and repeat the defaults so a unit test can build a spec from a
partial dict. Field names follow the CRD (camelCase) through aliases.
"""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import alias_generators

from order_common import schema

GROUP = "order-pipeline.dev"
VERSION = "v1alpha1"
PLURAL = "orderpipelines"
KIND = "OrderPipeline"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
    )


class SecretReference(_Model):
    name: str


class AwsEndpoints(_Model):
    sqs: str | None = None
    dynamodb: str | None = None


class AwsCredentials(_Model):
    source: Literal["PodIdentity", "Secret"] = "PodIdentity"
    secret_ref: SecretReference | None = None
    service_account_name: str | None = None


class AwsSpec(_Model):
    region: str = "us-east-1"
    endpoints: AwsEndpoints = AwsEndpoints()
    credentials: AwsCredentials = AwsCredentials()


class QueueSpec(_Model):
    name: str
    visibility_timeout_seconds: int = schema.QUEUE_DEFAULTS.visibility_timeout_seconds
    retention_seconds: int = schema.QUEUE_DEFAULTS.retention_seconds
    delay_seconds: int = 0
    max_receive_count: int = schema.QUEUE_DEFAULTS.max_receive_count
    dlq_retention_seconds: int = schema.QUEUE_DEFAULTS.dlq_retention_seconds
    tags: dict[str, str] = {}
    deletion_policy: Literal["Retain", "Delete"] = "Retain"

    @property
    def dlq_name(self) -> str:
        return schema.dlq_name(self.name)


class TablesSpec(_Model):
    prefix: str

    @property
    def names(self) -> list[str]:
        return [table.name(self.prefix) for table in schema.TABLES]


class Resources(_Model):
    requests: dict[str, str | int] = {"cpu": "100m", "memory": "128Mi"}
    limits: dict[str, str | int] = {"memory": "256Mi"}


class DisruptionBudget(_Model):
    max_unavailable: int | str = 1


class ApiAutoscaling(_Model):
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_utilization_percentage: int = pydantic.Field(
        default=70, alias="targetCPUUtilizationPercentage"
    )


class ApiSpec(_Model):
    image: str
    resources: Resources = Resources()
    env: dict[str, str] = {}
    secret_ref: SecretReference | None = None
    autoscaling: ApiAutoscaling = ApiAutoscaling()
    disruption_budget: DisruptionBudget = DisruptionBudget()


class ProcessorScaling(_Model):
    min_replicas: int = 1
    max_replicas: int = 10
    target_messages_per_replica: int = 100
    activation_threshold: int = 0
    polling_interval_seconds: int = 15
    cooldown_seconds: int = 300
    count_in_flight: bool = True


class ProcessorSpec(_Model):
    image: str
    resources: Resources = Resources()
    env: dict[str, str] = {}
    secret_ref: SecretReference | None = None
    concurrency: int = 40
    batch_size: int = 10
    scaling: ProcessorScaling = ProcessorScaling()
    disruption_budget: DisruptionBudget = DisruptionBudget()


class DevelopmentSpec(_Model):
    reload: bool = False
    """Run the API and the processor from a writable copy of their sources and restart them when
    a source file changes, so `skaffold dev` can sync Python files into running containers."""


class OrderPipelineSpec(_Model):
    aws: AwsSpec = AwsSpec()
    queue: QueueSpec
    tables: TablesSpec
    api: ApiSpec
    processor: ProcessorSpec
    development: DevelopmentSpec = DevelopmentSpec()
