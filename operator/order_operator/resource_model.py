"""The conventions every pydantic model of the OrderPipeline resource follows, in one place.

The spec's models (`v1alpha1.spec`, `rollout.spec`) and the status's (`v1alpha1.status`,
`rollout.status`) generate the CRD's schema (`v1alpha1.crd`): camelCase names through aliases,
attribute docstrings as descriptions, CEL rules for the apiserver. Pure (pydantic only), so
that the pure rollout core and the API version package can both build on it.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pydantic
from pydantic import alias_generators


def rule(expression: str, message: str) -> dict[str, Any]:
    """A CEL rule the apiserver checks (`json_schema_extra` of a model or a field)."""
    return {"x-kubernetes-validations": [{"rule": expression, "message": message}]}


class SpecModel(pydantic.BaseModel):
    """What a user writes: read back from the object, so unknown fields are ignored (the
    apiserver already pruned them) and the models are frozen."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    @pydantic.model_serializer(mode="wrap")
    def _without_nulls(self, handler: pydantic.SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An absent field is absent, not null: defaults in the CRD schema must not carry nulls.
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class StatusModel(pydantic.BaseModel):
    """What the operator writes: only declared fields survive the apiserver's pruning, so a
    model that validates what is written forbids any other (the CRD leaves that to pruning)."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )


class Condition(StatusModel):
    """A status condition as Kubernetes conventions have it (see `conditions`)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    last_transition_time: datetime.datetime | None = None


def condition_list() -> Any:
    """A `conditions` field: a list keyed by type, as server-side apply merges it."""
    return pydantic.Field(
        default=[],
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
