"""The Helm chart's static files: the CRD and the RBAC rules are the operator's own, byte for byte;
values.yaml is documented field by field and values.schema.json accepts it and rejects typos."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from order_operator import generate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/order-pipeline"


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_chart_crd_is_byte_identical_to_the_operators_source() -> None:
    source = REPO / "operator/order_operator/crd/orderpipelines.yaml"
    copies = sorted((CHART / "crds").iterdir())
    assert [path.name for path in copies] == [source.name]
    assert copies[0].read_bytes() == source.read_bytes(), (
        f"copy {source} to {copies[0]}: the chart must ship the operator's CRD unchanged"
    )


def test_chart_rbac_rules_file_is_byte_identical_to_the_operators() -> None:
    source = REPO / "operator/order_operator/rbac/clusterrole.yaml"
    shipped = CHART / "files/operator-clusterrole.yaml"
    assert shipped.read_bytes() == source.read_bytes(), f"copy {source} to {shipped}"


def test_chart_copies_sources_with_the_operators_own_script() -> None:
    """The operator's init container (development.reload) runs what the pipelines' run."""
    shipped = CHART / "files/copy-sources.py"
    assert shipped.read_text() == generate.generated_files()[shipped], (
        f"run `make generate`: {shipped} is stale"
    )


def test_development_reload_is_off_by_default_and_must_be_a_boolean() -> None:
    assert values()["development"] == {"reload": False}
    broken = copy.deepcopy(values())
    broken["development"]["reload"] = "yes"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'boolean'"):
        jsonschema.validate(broken, schema())


def test_chart_declares_a_kubernetes_version_constraint() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert re.fullmatch(r">=1\.\d+\.\d+-0", chart["kubeVersion"])


def undocumented_values(text: str) -> list[str]:
    """Keys of values.yaml that neither carry a helm-docs `# --` comment nor sit inside a block
    that does: helm-docs documents exactly those."""
    missing: list[str] = []
    covered_below: int | None = None  # indentation of a documented key whose block we are in
    documented = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if stripped.startswith("# --"):
                documented = True
            continue
        if covered_below is not None and indent > covered_below:
            continue
        covered_below = None
        match = re.match(r"([A-Za-z0-9_]+):(.*)$", stripped)
        if match is None:
            continue
        key, rest = match.groups()
        if documented:
            covered_below = indent
        elif rest.strip():
            missing.append(key)
        documented = False
    return missing


def test_every_value_is_documented_with_a_helm_docs_comment() -> None:
    assert undocumented_values((CHART / "values.yaml").read_text()) == []


def test_documentation_check_finds_an_undocumented_value() -> None:
    text = "# -- documented\na: 1\nsection:\n  # -- documented\n  b: {}\n  c: 2\n"
    assert undocumented_values(text) == ["c"]


def test_schema_accepts_the_default_values() -> None:
    jsonschema.validate(values(), schema())


@pytest.mark.parametrize(
    "path",
    [
        ("operator", "imag"),
        ("operator", "serviceAccount", "anotations"),
        ("images", "api", "tags"),
        ("test",),
        ("operator", "resources", "request"),
        ("development", "relaod"),
    ],
)
def test_schema_rejects_a_misspelled_field(path: tuple[str, ...]) -> None:
    broken = copy.deepcopy(values())
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "x"
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        jsonschema.validate(broken, schema())


def test_schema_rejects_a_pipeline_without_a_valid_name() -> None:
    broken = copy.deepcopy(values())
    broken["pipelines"][0]["name"] = "Orders_1"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        jsonschema.validate(broken, schema())


def test_default_pipeline_retains_its_queues_and_notes_say_so() -> None:
    pipeline = values()["pipelines"][0]["spec"]
    assert pipeline["queue"]["deletionPolicy"] == "Retain"
    notes = (CHART / "templates/NOTES.txt").read_text()
    assert "LEAVES THE SQS QUEUES AND DYNAMODB TABLES" in notes
