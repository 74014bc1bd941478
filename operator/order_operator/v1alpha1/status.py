"""Pydantic models of an OrderPipeline's status: what the operator reports.

They define the status part of the CRD's schema (see `crd.py`); the operator writes the same
fields as plain dicts through kopf's patch.
"""

from __future__ import annotations

import datetime
from typing import Literal

import pydantic
from pydantic import alias_generators


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: datetime.datetime | None = None


class QueueStatus(_Model):
    url: str | None = None
    arn: str | None = None
    dlq_url: str | None = None
    dlq_arn: str | None = None
    backlog: int | None = None
    """Visible + in-flight messages in the queue."""
    visible: int | None = None
    in_flight: int | None = None
    dlq_depth: int | None = None


class ApiStatus(_Model):
    ready_replicas: int | None = None


class ProcessorStatus(_Model):
    desired_replicas: int | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    last_scale_time: datetime.datetime | None = None


class OrderPipelineStatus(_Model):
    observed_generation: int | None = None
    conditions: list[Condition] = pydantic.Field(
        default=[],
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    queue: QueueStatus | None = None
    tables: list[str] = []
    api: ApiStatus | None = None
    processor: ProcessorStatus | None = None
