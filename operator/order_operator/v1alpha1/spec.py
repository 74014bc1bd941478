"""Pydantic models of an OrderPipeline's spec: the one definition of the resource's API.

The CRD's schema is generated from these models (`make generate`, see `crd.py`): types,
defaults, bounds, patterns, descriptions (attribute docstrings) and the apiserver's CEL rules.
The apiserver validates and defaults each object with it; the operator reads the object back
through these models. Field names follow the CRD (camelCase) through aliases.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic

from order_common import schema
from order_operator import resource_model
from order_operator.rollout import spec as rollout_spec

GROUP = "order-pipeline.dev"
VERSION = "v1alpha1"
PLURAL = "orderpipelines"
KIND = "OrderPipeline"

IntOrString = Annotated[
    int | str,
    pydantic.WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    ),
]
"""A Kubernetes int-or-string (a quantity, a percentage)."""


def immutable(field: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": field}]}


class SecretReference(resource_model.SpecModel):
    name: str = pydantic.Field(min_length=1)


class AwsEndpoints(resource_model.SpecModel):
    """Endpoint overrides (local engines); unset means AWS."""

    sqs: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    dynamodb: str | None = pydantic.Field(default=None, pattern=r"^https?://")


class AwsCredentials(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "self.source != 'Secret' || has(self.secretRef)",
        "credentials.secretRef is required when credentials.source is Secret",
    ),
):
    source: Literal["PodIdentity", "Secret"] = "PodIdentity"
    """PodIdentity: the default AWS chain of the operator and the workloads (IRSA, instance
    role, env). Secret: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from a Secret in the
    pipeline's namespace."""
    secret_ref: SecretReference | None = None
    service_account_name: str | None = None
    """ServiceAccount of the workloads' pods (e.g. one bound to an IAM role)."""


class AwsSpec(resource_model.SpecModel):
    """Where the queues and tables live and how to reach them."""

    region: str = pydantic.Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    endpoints: AwsEndpoints = AwsEndpoints()
    credentials: AwsCredentials = AwsCredentials()


_QUEUE = schema.QUEUE_DEFAULTS
_MAX_RETENTION = 14 * 86_400  # SQS's limit


class QueueSpec(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "self.dlqRetentionSeconds > self.retentionSeconds",
        "queue.dlqRetentionSeconds must be longer than queue.retentionSeconds"
        " (moved messages keep their original enqueue time)",
    ),
):
    name: str = pydantic.Field(
        pattern=r"^[A-Za-z0-9_-]{1,76}$",
        json_schema_extra=immutable(
            "queue.name is immutable; create a new OrderPipeline for a new queue"
        ),
    )
    """SQS queue name; its DLQ is <name>-dlq. Immutable."""
    visibility_timeout_seconds: int = pydantic.Field(
        default=_QUEUE.visibility_timeout_seconds, ge=0, le=43_200
    )
    retention_seconds: int = pydantic.Field(
        default=_QUEUE.retention_seconds, ge=60, le=_MAX_RETENTION
    )
    delay_seconds: int = pydantic.Field(default=0, ge=0, le=900)
    max_receive_count: int = pydantic.Field(default=_QUEUE.max_receive_count, ge=1, le=1000)
    dlq_retention_seconds: int = pydantic.Field(
        default=_QUEUE.dlq_retention_seconds, ge=60, le=_MAX_RETENTION
    )
    tags: dict[str, Annotated[str, pydantic.Field(max_length=256)]] = pydantic.Field(
        default={}, max_length=40
    )
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    """Retain keeps queues and tables when the OrderPipeline is deleted. Delete stops the API
    (its Service selects no pod, its Deployment scales to zero), waits as deletionWaitsFor
    says, scales the processor to zero, waits for every pod to be gone, then removes the queues
    and tables, but only those tagged as this very OrderPipeline's."""
    deletion_waits_for: Literal["Queue", "QueueAndDlq", "Nothing"] = "Queue"
    """What a Delete waits to be empty while the processor still runs: Queue (it drains by
    itself; what the DLQ holds is reported and deleted), QueueAndDlq (someone must drain or
    redrive the DLQ), or Nothing (what both hold is reported and deleted). Can be changed on an
    OrderPipeline that is being deleted."""

    @property
    def dlq_name(self) -> str:
        return schema.dlq_name(self.name)


class TablesSpec(resource_model.SpecModel):
    prefix: str = pydantic.Field(
        # Not empty: bare table names (orders, payments) are the likeliest to be someone else's.
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]{1,200}$",
        json_schema_extra=immutable("tables.prefix is immutable"),
    )
    """Tables are <prefix>orders, catalog, idempotency, velocity, payments. Immutable."""

    @property
    def names(self) -> list[str]:
        return [table.name(self.prefix) for table in schema.TABLES]


class Resources(resource_model.SpecModel):
    requests: dict[str, IntOrString] = {"cpu": "100m", "memory": "128Mi"}
    limits: dict[str, IntOrString] = {"memory": "256Mi"}


class DisruptionBudget(resource_model.SpecModel):
    max_unavailable: IntOrString = 1


class Toleration(resource_model.SpecModel):
    """A Kubernetes pod toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Placement(resource_model.SpecModel):
    """Where a component's pods may run (copied into their pod spec)."""

    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []


class ApiAutoscaling(resource_model.SpecModel):
    min_replicas: int = pydantic.Field(default=2, ge=1, le=100)
    max_replicas: int = pydantic.Field(default=10, ge=1, le=100)
    target_cpu_utilization_percentage: int = pydantic.Field(
        default=70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    scale_down_stabilization_seconds: int = pydantic.Field(default=300, ge=0, le=3600)
    """How long a lower replica count must be wanted before the API scales in (the HPA's
    scaleDown stabilization window; Kubernetes' default)."""


_IMAGE = pydantic.Field(min_length=1)


class ApiSpec(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
        "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas",
    ),
):
    image: str = _IMAGE
    resources: Resources = Resources()
    env: dict[str, str] = {}
    """Extra environment (plain values) for the containers."""
    secret_ref: SecretReference | None = None
    """Secret whose keys become environment variables (SIGNING_SECRET, JWT_SECRET, API_CLIENTS
    for the API)."""
    public_base_url: str | None = pydantic.Field(
        default=None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$"
    )
    """Base of the status URLs the API hands out, as clients reach it (e.g. the ingress's
    https://orders.example.com). Unset: the API's in-cluster Service URL, for clients inside
    the cluster; never a request's Host header."""
    autoscaling: ApiAutoscaling = ApiAutoscaling()
    disruption_budget: DisruptionBudget = DisruptionBudget()
    placement: Placement = Placement()


class ProcessorScaling(
    resource_model.SpecModel,
    json_schema_extra=resource_model.rule(
        "self.minReplicas <= self.maxReplicas",
        "processor.scaling.minReplicas must not exceed processor.scaling.maxReplicas",
    ),
):
    min_replicas: int = pydantic.Field(default=1, ge=0, le=1000)
    max_replicas: int = pydantic.Field(default=10, ge=1, le=1000)
    target_messages_per_replica: int = pydantic.Field(default=100, ge=1)
    activation_threshold: int = pydantic.Field(default=0, ge=0)
    """With minReplicas 0, scale 0 -> 1 only when the backlog exceeds this."""
    polling_interval_seconds: int = pydantic.Field(default=15, ge=1, le=3600)
    cooldown_seconds: int = pydantic.Field(default=300, ge=0, le=86_400)
    """How long a lower replica count must be wanted before scaling down."""
    count_in_flight: bool = True
    """Whether in-flight (received, not yet deleted) messages count as backlog."""


class ProcessorSpec(resource_model.SpecModel):
    image: str = _IMAGE
    resources: Resources = Resources()
    env: dict[str, str] = {}
    """Extra environment (plain values) for the containers; PAYMENT_GATEWAY among them."""
    secret_ref: SecretReference | None = None
    """Secret whose keys become environment variables."""
    concurrency: int = pydantic.Field(default=80, ge=1, le=1000)
    """The most messages each pod processes at once (its `CONCURRENCY`)."""
    batch_size: int = pydantic.Field(default=10, ge=1, le=10)
    scaling: ProcessorScaling = ProcessorScaling()
    disruption_budget: DisruptionBudget = DisruptionBudget()
    placement: Placement = Placement()


class DevelopmentSpec(resource_model.SpecModel):
    """For a development loop such as `skaffold dev`; leave it unset in production."""

    reload: bool = False
    """Run the API and the processor from a writable copy of their sources (an emptyDir over
    /app, filled from the image by an init container) and restart them when a Python file
    there changes, so files synced into the running containers take effect. The root
    filesystem stays read-only; the containers have no liveness probe, so a change that does
    not import waits for the next one instead of crash-looping."""


class OrderPipelineSpec(resource_model.SpecModel):
    aws: AwsSpec = AwsSpec()
    queue: QueueSpec
    tables: TablesSpec
    api: ApiSpec
    processor: ProcessorSpec
    development: DevelopmentSpec = DevelopmentSpec()
    rollout: rollout_spec.RolloutSpec | None = None
    """Canary rollouts of the processor and the API, judged by Prometheus metrics. Absent: a
    change to a component's pod template updates it in place."""
    adopt: bool = False
    """Take over queues and tables of the spec's names that exist without an owner tag, or that
    an earlier OrderPipeline of the same namespace and name left behind (deletionPolicy
    Retain): tag them as this one's and converge them. Without it such a queue or table is a
    NameConflict and is never changed or deleted. Resources of another OrderPipeline are never
    adopted."""
