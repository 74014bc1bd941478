"""Pydantic models of an OrderPipeline's status: what the operator reports.

They define the status part of the CRD's schema (see `crd.py`); the operator writes the same
fields as plain dicts through kopf's patch.
"""

from __future__ import annotations

import datetime

from order_operator import resource_model
from order_operator.rollout import status as rollout_status


class QueueStatus(resource_model.StatusModel):
    url: str | None = None
    arn: str | None = None
    dlq_url: str | None = None
    dlq_arn: str | None = None
    backlog: int | None = None
    """Visible + in-flight messages in the queue."""
    visible: int | None = None
    in_flight: int | None = None
    dlq_depth: int | None = None


class ApiStatus(resource_model.StatusModel):
    ready_replicas: int | None = None


class ProcessorStatus(resource_model.StatusModel):
    desired_replicas: int | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    last_scale_time: datetime.datetime | None = None


class RolloutStatuses(resource_model.StatusModel):
    """Each component's canary rollout (`spec.rollout`); absent until its first pass."""

    processor: rollout_status.RolloutStatusSchema | None = None
    api: rollout_status.RolloutStatusSchema | None = None


class OrderPipelineStatus(resource_model.StatusModel):
    observed_generation: int | None = None
    conditions: list[resource_model.Condition] = resource_model.condition_list()
    queue: QueueStatus | None = None
    tables: list[str] = []
    api: ApiStatus | None = None
    processor: ProcessorStatus | None = None
    rollout: RolloutStatuses | None = None
