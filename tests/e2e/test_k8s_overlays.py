"""k8s/: `kubectl kustomize` builds the dev, staging and prod overlays, each yields one
OrderPipeline sized for its environment, and the real apiserver (CRD installed) accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from order_devtools import cluster as local_cluster

from .conftest import NamespaceFactory
from .k8s_helpers import wait_established

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "k8s/overlays"
ENVIRONMENTS = ["dev", "staging", "prod"]


def build(kubectl_path: Path, environment: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kubectl_path), "kustomize", str(OVERLAYS / environment)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def pipeline(kubectl_path: Path, environment: str) -> dict[str, Any]:
    (built,) = build(kubectl_path, environment)
    assert built["kind"] == "OrderPipeline"
    return built


def test_every_overlay_directory_is_tested() -> None:
    assert sorted(path.name for path in OVERLAYS.iterdir()) == sorted(ENVIRONMENTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_overlay_builds_one_pipeline_of_its_own_in_its_namespace(
    kubectl_path: Path, environment: str
) -> None:
    built = pipeline(kubectl_path, environment)
    assert built["metadata"]["namespace"] == f"orders-{environment}"
    assert built["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "order-pipeline",
        "app.kubernetes.io/environment": environment,
    }
    spec = built["spec"]
    # Queues and tables are per environment, never shared.
    assert spec["queue"]["name"] == f"orders-{environment}"
    assert spec["tables"]["prefix"] == f"orders-{environment}-"
    assert spec["queue"]["tags"] == {"environment": environment}
    # What the base shares reaches every overlay.
    assert spec["api"]["secretRef"] == {"name": "order-api-secrets"}
    assert spec["processor"]["image"] == "order-pipeline/processor:0.1.0"


def test_sizes_and_scaling_grow_from_dev_to_prod(kubectl_path: Path) -> None:
    specs = [pipeline(kubectl_path, environment)["spec"] for environment in ENVIRONMENTS]
    api_max = [spec["api"]["autoscaling"]["maxReplicas"] for spec in specs]
    api_min = [spec["api"]["autoscaling"]["minReplicas"] for spec in specs]
    processor_max = [spec["processor"]["scaling"]["maxReplicas"] for spec in specs]
    assert api_max == sorted(api_max)
    assert len(set(api_max)) == 3
    assert api_min == sorted(api_min)
    assert processor_max == sorted(processor_max)
    assert len(set(processor_max)) == 3
    dev, _, prod = specs
    assert dev["processor"]["scaling"]["minReplicas"] == 0  # dev idles at zero
    assert dev["queue"]["deletionPolicy"] == "Delete"
    assert prod["queue"]["deletionPolicy"] == "Retain"
    assert prod["api"]["autoscaling"]["minReplicas"] >= 3


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_apiserver_accepts_the_built_overlay(
    kube_cluster: local_cluster.ClusterAccess,
    kubectl_path: Path,
    make_namespace: NamespaceFactory,
    tmp_path: Path,
    environment: str,
) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(REPO / "charts/order-pipeline/crds"))
    wait_established(kube_cluster, "orderpipelines.order-pipeline.dev")
    built = pipeline(kubectl_path, environment)
    # The environment's namespace does not exist here: dry-run into a fresh one.
    built["metadata"]["namespace"] = make_namespace()
    manifest = tmp_path / f"{environment}.yaml"
    manifest.write_text(yaml.safe_dump(built))
    accepted = kube_cluster.kubectl("apply", "--dry-run=server", "-f", str(manifest))
    assert "orderpipeline.order-pipeline.dev/orders created (server dry run)" in accepted.stdout
