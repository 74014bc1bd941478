"""argocd/: the real apiserver, with Argo CD's own CRDs installed, accepts every manifest; the
ApplicationSet's environments each have a values file the chart accepts; the project is narrow."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from order_devtools import cluster as local_cluster

from .conftest import NamespaceFactory
from .k8s_helpers import go_module_dir, wait_established

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
CHART = REPO / "charts/order-pipeline"
# Argo CD's CRDs ship in its Go module; the module proxy serves it (cached after the first run).
ARGOCD_MODULE = "github.com/argoproj/argo-cd/v3@v3.1.0"
ENVIRONMENTS = ["dev", "staging", "prod"]


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(ARGOCD.rglob("*.yaml")):
        if "values" in path.relative_to(ARGOCD).parts:
            continue  # chart values, not manifests
        (document,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
        found[str(path.relative_to(ARGOCD))] = document
    return found


@pytest.fixture(scope="module")
def argocd_crds(kube_cluster: local_cluster.ClusterAccess) -> Path:
    crds = go_module_dir(ARGOCD_MODULE, what="Argo CD's CRDs") / "manifests/crds"
    for name in ("application-crd.yaml", "applicationset-crd.yaml", "appproject-crd.yaml"):
        kube_cluster.kubectl("apply", "--server-side", "-f", str(crds / name))
    for plural in ("applications", "applicationsets", "appprojects"):
        wait_established(kube_cluster, f"{plural}.argoproj.io")
    return crds


def test_argocd_holds_the_project_root_app_crd_app_applicationset_and_health_check() -> None:
    kinds = {path: document["kind"] for path, document in manifests().items()}
    assert kinds == {
        "apps/applicationset.yaml": "ApplicationSet",
        "apps/crds.yaml": "Application",
        "bootstrap/argocd-cm-health.yaml": "ConfigMap",
        "bootstrap/project.yaml": "AppProject",
        "bootstrap/root-app.yaml": "Application",
    }


@pytest.mark.parametrize("path", sorted(manifests()))
def test_apiserver_accepts_the_manifest(
    kube_cluster: local_cluster.ClusterAccess,
    argocd_crds: Path,
    make_namespace: NamespaceFactory,
    tmp_path: Path,
    path: str,
) -> None:
    document = manifests()[path]
    if document["apiVersion"] == "v1":
        kubernetes_validate.validate(document, "1.34", strict=True)
    # The argocd namespace does not exist here: dry-run into a fresh one.
    document["metadata"]["namespace"] = make_namespace()
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(document))
    accepted = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest))
    assert "(server dry run)" in accepted.stdout


def test_apiserver_refuses_a_broken_argocd_manifest(
    kube_cluster: local_cluster.ClusterAccess,
    argocd_crds: Path,
    make_namespace: NamespaceFactory,
    tmp_path: Path,
) -> None:
    """The dry runs above can fail: Argo CD's schema is enforced."""
    document = manifests()["apps/applicationset.yaml"]
    document["metadata"]["namespace"] = make_namespace()
    document["spec"]["generators"] = "every environment"
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump(document))
    refused = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest), check=False)
    assert refused.returncode != 0
    assert "generators" in refused.stderr


def test_applicationset_deploys_the_chart_per_environment_with_its_values(
    helm_path: Path, tmp_path: Path
) -> None:
    appset = manifests()["apps/applicationset.yaml"]["spec"]
    assert appset["goTemplate"] is True
    assert appset["goTemplateOptions"] == ["missingkey=error"]
    elements = appset["generators"][0]["list"]["elements"]
    assert [element["env"] for element in elements] == ENVIRONMENTS
    source = appset["template"]["spec"]["source"]
    assert source["path"] == "charts/order-pipeline"
    assert source["helm"]["skipCrds"] is True
    assert appset["template"]["spec"]["project"] == "order-pipeline"
    for environment in ENVIRONMENTS:
        values_file = CHART / source["helm"]["valueFiles"][0].replace("{{ .env }}", environment)
        values_file = values_file.resolve()
        assert values_file == ARGOCD / "values" / f"{environment}.yaml"
        env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path)}
        rendered = subprocess.run(
            [
                str(helm_path), "template", f"order-pipeline-{environment}", str(CHART),
                "--namespace", f"orders-{environment}", "--values", str(values_file),
            ],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert rendered.returncode == 0, rendered.stderr
        documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        (pipeline,) = [d for d in documents if d["kind"] == "OrderPipeline"]
        assert pipeline["spec"]["queue"]["name"] == f"orders-{environment}"
        # No generated Secret: Argo CD renders without `lookup`, it would change every sync.
        assert not [d for d in documents if d["kind"] == "Secret"]
        (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == [f"--namespace=orders-{environment}"]


def test_project_limits_sources_destinations_and_kinds() -> None:
    project = manifests()["bootstrap/project.yaml"]["spec"]
    assert len(project["sourceRepos"]) == 1
    assert "*" not in json.dumps(project)
    namespaces = sorted(destination["namespace"] for destination in project["destinations"])
    assert namespaces == ["argocd", "orders-dev", "orders-prod", "orders-staging"]
    cluster_kinds = {entry["kind"] for entry in project["clusterResourceWhitelist"]}
    assert cluster_kinds == {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Namespace",
    }
    every_repo = {
        manifest["spec"]["source"]["repoURL"]
        for manifest in manifests().values()
        if manifest["kind"] == "Application"
    } | {manifests()["apps/applicationset.yaml"]["spec"]["template"]["spec"]["source"]["repoURL"]}
    assert every_repo == set(project["sourceRepos"])
