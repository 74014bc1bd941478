"""The CRD files: generated from the spec models, structural, defaults that agree with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from order_operator.rollout import status as rollout_status
from order_operator.v1alpha1 import crd as crd_module
from order_operator.v1alpha1 import spec as v1alpha1

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator/order_operator"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (OPERATOR_DIR / "crd/orderpipelines.yaml").read_text()
    )
    return document


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("target", crd_module.TARGETS, ids=lambda p: p.parts[-3])
def test_both_crd_files_are_what_make_generate_writes(target: Path) -> None:
    assert target.read_text() == crd_module.render(), f"run `make generate`: {target} is stale"


def test_the_schema_is_structural_no_references_or_untyped_fields(crd: dict[str, Any]) -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "$ref" not in node, path
        assert "title" not in node, path
        typed = "type" in node or node.get("x-kubernetes-int-or-string")
        assert typed, f"{path} has no type"
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}.{key}")

    walk(schema_of(crd), "")


def test_exclusive_bounds_are_openapi_v3_flags(crd: dict[str, Any]) -> None:
    """The apiserver wants `exclusiveMinimum: true` beside `minimum`, not JSON Schema's number."""
    rollout = schema_of(crd)["properties"]["spec"]["properties"]["rollout"]["properties"]
    tolerance = rollout["apiShareTolerance"]
    assert (tolerance["minimum"], tolerance["exclusiveMinimum"]) == (0, True)
    alpha = rollout["analysis"]["properties"]["api"]["properties"]["errorRatios"]["items"]
    bounds = alpha["properties"]["alpha"]
    assert (bounds["maximum"], bounds["exclusiveMaximum"]) == (1, True)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("exclusiveMinimum", "exclusiveMaximum"):
                assert isinstance(node.get(key, True), bool), node
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema_of(crd))


def test_crd_names_match_the_group_and_version_the_operator_watches(crd: dict[str, Any]) -> None:
    assert crd["spec"]["group"] == v1alpha1.GROUP
    assert crd["spec"]["names"]["plural"] == v1alpha1.PLURAL
    assert crd["spec"]["names"]["kind"] == v1alpha1.KIND
    assert crd["metadata"]["name"] == f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == v1alpha1.VERSION
    assert version["subresources"] == {"status": {}}


def leaf_defaults(schema: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for name, child in (schema.get("properties") or {}).items():
        if "default" in child and child.get("type") != "object":
            found[(*path, name)] = child["default"]
        found.update(leaf_defaults(child, (*path, name)))
    return found


def test_every_schema_default_equals_the_spec_model_default(crd: dict[str, Any]) -> None:
    spec_schema = schema_of(crd)["properties"]["spec"]
    model = v1alpha1.OrderPipelineSpec.model_validate(
        {
            "queue": {"name": "q"},
            "tables": {"prefix": "p"},
            "api": {"image": "a"},
            "processor": {"image": "b"},
            # The optional blocks present, so that the defaults inside them are compared too.
            "rollout": {"analysis": {"prometheus": {"address": "http://prometheus:9090"}}},
        }
    ).model_dump(by_alias=True)
    defaults = leaf_defaults(spec_schema)
    assert defaults
    for path, default in defaults.items():
        value: Any = model
        for key in path:
            value = value[key]
        assert value == default, path


def test_every_status_field_the_operator_writes_is_declared(crd: dict[str, Any]) -> None:
    status = schema_of(crd)["properties"]["status"]["properties"]
    assert set(status["queue"]["properties"]) >= {
        "url",
        "arn",
        "dlqUrl",
        "dlqArn",
        "backlog",
        "visible",
        "inFlight",
        "dlqDepth",
    }
    assert set(status["processor"]["properties"]) >= {
        "desiredReplicas",
        "currentReplicas",
        "readyReplicas",
        "lastScaleTime",
    }
    assert {"observedGeneration", "conditions", "api", "tables", "rollout"} <= set(status)


def test_the_rollout_status_of_each_component_is_declared(crd: dict[str, Any]) -> None:
    """The apiserver prunes undeclared status: `status.rollout.<component>` must carry every
    field the rollout machine writes, and no `additionalProperties: false`, which the apiserver
    refuses beside `properties`."""
    rollout = schema_of(crd)["properties"]["status"]["properties"]["rollout"]["properties"]
    written = rollout_status.RolloutStatus(phase="Healthy", stable_revision="r1").to_dict()
    assert set(rollout) == {"processor", "api"}
    for component in rollout.values():
        fields = component["properties"]
        assert set(written) <= set(fields)
        assert fields["phase"]["enum"] == ["Healthy", "Progressing", "Paused", "Degraded"]
        measure = fields["lastAnalysis"]["properties"]["measures"]["items"]
        assert {"name", "value", "verdict", "detail"} <= set(measure["properties"])
    assert "additionalProperties" not in yaml.safe_dump(schema_of(crd)["properties"]["status"])


def test_printer_columns_show_each_components_rollout_phase_and_weight(
    crd: dict[str, Any],
) -> None:
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Processor Rollout"] == ".status.rollout.processor.phase"
    assert columns["Processor Weight"] == ".status.rollout.processor.targetWeight"
    assert columns["API Rollout"] == ".status.rollout.api.phase"
    assert columns["API Weight"] == ".status.rollout.api.targetWeight"
    assert list(columns)[:5] == ["Ready", "API", "Processors", "Backlog", "Processor Rollout"]
    assert list(columns)[-1] == "Age"


def test_the_spec_takes_an_optional_rollout() -> None:
    base = {
        "queue": {"name": "q"},
        "tables": {"prefix": "p"},
        "api": {"image": "a"},
        "processor": {"image": "b"},
    }
    assert v1alpha1.OrderPipelineSpec.model_validate(base).rollout is None
    with_rollout = v1alpha1.OrderPipelineSpec.model_validate({**base, "rollout": {}})
    assert with_rollout.rollout is not None
    assert with_rollout.rollout.order == ["processor", "api"]


def test_rbac_never_grants_delete_or_wildcards() -> None:
    role = yaml.safe_load((OPERATOR_DIR / "rbac/clusterrole.yaml").read_text())
    for rule in role["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert "delete" not in rule["verbs"]
