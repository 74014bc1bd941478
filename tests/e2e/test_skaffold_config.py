"""skaffold.yaml: valid against skaffold's published JSON schema for its apiVersion (taken from
skaffold's Go module), with and without each profile; its artifacts, chart values and overlays
point at things that exist and render."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import pytest
import yaml

from order_operator import builders

from .k8s_helpers import go_module_dir

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SKAFFOLD = REPO / "skaffold.yaml"
CHART = REPO / "charts/order-pipeline"
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2@v2.16.1"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


@pytest.fixture(scope="module")
def skaffold_schema() -> jsonschema.Draft7Validator:
    module_dir = go_module_dir(SKAFFOLD_MODULE, what="skaffold's schemas")
    version = config()["apiVersion"].removeprefix("skaffold/")
    path = module_dir / f"docs-v2/content/en/schemas/{version}.json"
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def errors(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(document)]


def with_profile(name: str) -> dict[str, Any]:
    base = config()
    (profile,) = [profile for profile in base["profiles"] if profile["name"] == name]
    patched: dict[str, Any] = jsonpatch.apply_patch(base, profile["patches"])
    return patched


def test_skaffold_config_matches_the_schema_of_its_api_version(
    skaffold_schema: jsonschema.Draft7Validator,
) -> None:
    assert config()["apiVersion"] == "skaffold/v4beta13"
    assert errors(skaffold_schema, config()) == []


def test_schema_check_refuses_a_misspelled_field(
    skaffold_schema: jsonschema.Draft7Validator,
) -> None:
    broken = config()
    broken["portFoward"] = broken.pop("portForward")
    assert errors(skaffold_schema, broken)


@pytest.mark.parametrize("profile", ["dev", "kustomize"])
def test_config_with_the_profile_applied_matches_the_schema(
    skaffold_schema: jsonschema.Draft7Validator, profile: str
) -> None:
    assert errors(skaffold_schema, with_profile(profile)) == []


def test_three_artifacts_are_built_from_the_dockerfiles() -> None:
    artifacts = {a["image"]: a["docker"]["dockerfile"] for a in config()["build"]["artifacts"]}
    assert artifacts == {
        "order-pipeline/operator": "operator/Dockerfile",
        "order-pipeline/api": "services/api.Dockerfile",
        "order-pipeline/processor": "services/processor.Dockerfile",
    }
    assert all((REPO / dockerfile).is_file() for dockerfile in artifacts.values())


def _helm_template(
    helm_path: Path, home: Path, release: str, set_values: dict[str, Any]
) -> list[dict[str, Any]]:
    """`helm template` of the chart with skaffold's `--set` values, as skaffold would run it."""
    arguments = [item for key, value in set_values.items() for item in ("--set", f"{key}={value}")]
    env = {**os.environ, "HELM_CACHE_HOME": str(home), "HELM_CONFIG_HOME": str(home)}
    result = subprocess.run(
        [str(helm_path), "template", release, str(CHART), *arguments],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_image_references_reach_the_chart_and_render(helm_path: Path, tmp_path: Path) -> None:
    (release,) = config()["manifests"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    # What skaffold would substitute for each artifact.
    rendered_values = {
        key: re.sub(
            r"\{\{\.IMAGE_(REPO|TAG|DIGEST)_order_pipeline_(\w+)\}\}",
            lambda match: {
                "REPO": f"local/{match[2]}",
                "TAG": "abc123",
                "DIGEST": "sha256:" + "0" * 64,
            }[match[1]],
            template,
        )
        for key, template in templates.items()
    }
    assert set(templates) == {
        f"{prefix}.{field}"
        for prefix in ("operator.image", "images.api", "images.processor")
        for field in ("repository", "tag")
    }
    documents = _helm_template(
        helm_path, tmp_path, release["name"], {**rendered_values, **release["setValues"]}
    )
    digest = "abc123@sha256:" + "0" * 64
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"local/operator:{digest}"
    )
    (pipeline,) = [d for d in documents if d["kind"] == "OrderPipeline"]
    assert pipeline["spec"]["api"]["image"] == f"local/api:{digest}"
    assert pipeline["spec"]["processor"]["image"] == f"local/processor:{digest}"


def test_dev_profile_syncs_each_components_python_sources_to_where_the_image_has_them() -> None:
    artifacts = {a["image"]: a for a in with_profile("dev")["build"]["artifacts"]}
    for image, packages in {
        "order-pipeline/operator": ["order_operator", "order_common"],
        "order-pipeline/api": ["order_api", "order_common"],
        "order-pipeline/processor": ["order_processor", "order_common"],
    }.items():
        rules = artifacts[image]["sync"]["manual"]
        dockerfile = (REPO / artifacts[image]["docker"]["dockerfile"]).read_text()
        for package in packages:
            (rule,) = [rule for rule in rules if f"/{package}/" in rule["src"]]
            source_dir = rule["src"].split("/**")[0]
            # The Dockerfile copies that directory to dest/<package>, as the sync rule assumes.
            assert f"COPY {source_dir} {rule['dest']}/{package}" in dockerfile
            assert source_dir.removeprefix(rule["strip"]) == package
            # ... and where dev mode mounts the writable copy the processes reload from.
            assert rule["dest"] == builders.SOURCE_DIR


def test_dev_profile_deploys_with_development_reload_so_synced_files_take_effect(
    helm_path: Path, tmp_path: Path
) -> None:
    (release,) = with_profile("dev")["manifests"]["helm"]["releases"]
    assert release["setValues"]["development.reload"] == "true"
    documents = _helm_template(helm_path, tmp_path, release["name"], release["setValues"])
    (pipeline,) = [d for d in documents if d["kind"] == "OrderPipeline"]
    assert pipeline["spec"]["development"] == {"reload": True}
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["workingDir"] == builders.SOURCE_DIR
    assert container["command"][-2:] == ["python -m order_operator --namespace=orders-dev", "."]
    # Without the profile (`skaffold run`), no development mode.
    assert "development.reload" not in config()["manifests"]["helm"]["releases"][0]["setValues"]


def test_kustomize_profile_deploys_the_dev_overlay_without_the_charts_pipelines() -> None:
    patched = with_profile("kustomize")
    assert patched["manifests"]["kustomize"]["paths"] == ["k8s/overlays/dev"]
    assert (REPO / "k8s/overlays/dev/kustomization.yaml").is_file()
    assert patched["manifests"]["helm"]["releases"][0]["setValues"]["pipelines"] == "null"
    assert "kubectl" in patched["deploy"]


def test_api_is_port_forwarded_from_the_dev_namespace() -> None:
    (forward,) = config()["portForward"]
    assert forward == {
        "resourceType": "service",
        "resourceName": "orders-api",
        "namespace": "orders-dev",
        "port": 80,
        "localPort": 8000,
    }
