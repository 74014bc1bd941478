"""The Helm chart on the real control plane: install into a namespace enforcing the `restricted`
Pod Security level, upgrade, `helm test`, rollback, uninstall; and the operator, run with the
token of the ServiceAccount the chart created, reconciles the chart's pipeline to Ready."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import engines

from .k8s_helpers import privileged_pod_refusal, wait_for
from .operator_harness import GROUP, PLURAL, VERSION, OperatorProcess, condition

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/order-pipeline"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class Release:
    """One Helm release of the chart in one namespace, driven with the cluster's helm."""

    def __init__(
        self, kube_cluster: local_cluster.ClusterAccess, namespace: str, values: Path
    ) -> None:
        self.cluster = kube_cluster
        self.namespace = namespace
        self.name = f"op-{uuid.uuid4().hex[:6]}"
        self.values = values

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.helm(*args, "--namespace", self.namespace, check=check, timeout=180)

    def write_values(self, values: dict[str, Any]) -> None:
        self.values.write_text(yaml.safe_dump(values))

    def install(self, *args: str) -> None:
        self.helm(
            "install", self.name, str(CHART), "--values", str(self.values),
            "--wait", "--timeout", "120s", *args,
        )  # fmt: skip

    def upgrade(self, *args: str) -> None:
        self.helm(
            "upgrade", self.name, str(CHART), "--values", str(self.values),
            "--wait", "--timeout", "120s", *args,
        )  # fmt: skip

    def revision(self) -> int:
        status = json.loads(self.helm("status", self.name, "--output", "json").stdout)
        return int(status["version"])

    @property
    def operator_name(self) -> str:
        return f"{self.name}-order-pipeline-operator"


@pytest.fixture
def restricted_namespace(make_namespace: Callable[..., str]) -> str:
    return make_namespace(RESTRICTED)


@pytest.fixture
def release(
    kube_cluster: local_cluster.ClusterAccess, restricted_namespace: str, tmp_path: Path
) -> Iterator[Release]:
    installed = Release(kube_cluster, restricted_namespace, tmp_path / "values.yaml")
    yield installed
    # A failed test must not leave cluster-scoped objects behind.
    installed.helm("uninstall", installed.name, "--ignore-not-found", check=False)


def pipeline_values(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"queue": {"name": queue}, "tables": {"prefix": f"{queue}-"}, **spec},
    }


def operator_pods(core: client.CoreV1Api, release: Release) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(
        release.namespace,
        label_selector=(
            f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
        ),
    )
    return [pod for pod in pods.items if pod.metadata.deletion_timestamp is None]


def running_ready(pod: client.V1Pod) -> bool:
    return pod.status.phase == "Running" and all(
        status.ready for status in pod.status.container_statuses or []
    )


def test_namespace_enforces_restricted_pod_security(
    k8s_api: client.ApiClient, restricted_namespace: str
) -> None:
    """The install below proves something: this namespace refuses a pod that breaks the level."""
    refused = privileged_pod_refusal(client.CoreV1Api(k8s_api), restricted_namespace)
    assert refused.status == 403
    assert "violates PodSecurity" in str(refused.body)


def test_install_upgrade_test_rollback_and_uninstall_in_a_restricted_namespace(
    release: Release, k8s_api: client.ApiClient
) -> None:
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    custom, rbac = client.CustomObjectsApi(k8s_api), client.RbacAuthorizationV1Api(k8s_api)
    suffix = release.name
    role_arn = "arn:aws:iam::123456789012:role/order-operator"
    base = {
        "operator": {"serviceAccount": {"annotations": {"iam/role-arn": role_arn}}},
        "pipelines": [pipeline_values("shop", f"shop-{suffix}")],
    }
    release.write_values(base)

    def pipeline_spec(name: str) -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL, name)
        return dict(body["spec"])

    def operator_memory_limit() -> str:
        deployment = apps.read_namespaced_deployment(release.operator_name, release.namespace)
        return str(deployment.spec.template.spec.containers[0].resources.limits["memory"])

    # Install: every pod is admitted under `restricted` and becomes Ready (--wait).
    release.install()
    assert release.revision() == 1
    (pod,) = operator_pods(core, release)
    assert running_ready(pod)
    account = core.read_namespaced_service_account(release.operator_name, release.namespace)
    assert account.metadata.annotations["iam/role-arn"] == role_arn
    assert pod.spec.service_account_name == release.operator_name
    assert pipeline_spec("shop")["api"]["image"] == "order-pipeline/api:0.1.0"
    assert operator_memory_limit() == "256Mi"
    signing = core.read_namespaced_secret("shop-api-secrets", release.namespace).data
    assert pipeline_spec("shop")["api"]["secretRef"] == {"name": "shop-api-secrets"}

    # Upgrade with changed values: the operator pod is replaced (Recreate) and the pipelines follow.
    changed = {
        **base,
        "operator": {**base["operator"], "resources": {"limits": {"memory": "300Mi"}}},
        "pipelines": [
            pipeline_values("shop", f"shop-{suffix}", api={"autoscaling": {"maxReplicas": 5}}),
            pipeline_values("outlet", f"outlet-{suffix}"),
        ],
    }
    release.write_values(changed)
    release.upgrade()
    assert release.revision() == 2
    assert operator_memory_limit() == "300Mi"
    (upgraded_pod,) = operator_pods(core, release)
    assert upgraded_pod.metadata.uid != pod.metadata.uid
    assert running_ready(upgraded_pod)
    assert upgraded_pod.spec.containers[0].resources.limits["memory"] == "300Mi"
    assert pipeline_spec("shop")["api"]["autoscaling"]["maxReplicas"] == 5
    assert pipeline_spec("outlet")["queue"]["name"] == f"outlet-{suffix}"
    # The generated API secrets survive upgrades unchanged.
    assert core.read_namespaced_secret("shop-api-secrets", release.namespace).data == signing

    # `helm test` runs one readiness pod per pipeline (kwok completes bare pods with exit 0).
    tested = release.helm("test", release.name, "--timeout", "60s")
    assert len(re.findall(r"Phase:\s+Succeeded", tested.stdout)) == 2, tested.stdout

    # Rollback to the first revision: the extra pipeline goes, the old values come back.
    release.helm("rollback", release.name, "1", "--wait", "--timeout", "120s")
    assert release.revision() == 3
    assert operator_memory_limit() == "256Mi"
    # The CRD's default again, not the upgrade's 5.
    assert pipeline_spec("shop")["api"]["autoscaling"]["maxReplicas"] == 10
    wait_for(
        lambda: (
            not [
                item
                for item in custom.list_namespaced_custom_object(
                    GROUP, VERSION, release.namespace, PLURAL
                )["items"]
                if item["metadata"]["name"] == "outlet"
            ]
        ),
        "the rolled-back pipeline to go away",
    )
    history = json.loads(release.helm("history", release.name, "--output", "json").stdout)
    assert history[-1]["description"] == "Rollback to 1"

    # Uninstall removes every object of the release, cluster-scoped ones included; the CRD stays.
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={release.name}"
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(release.namespace, label_selector=selector).items
            and not core.list_namespaced_service_account(
                release.namespace, label_selector=selector
            ).items
            and not core.list_namespaced_secret(release.namespace, label_selector=selector).items
            and not custom.list_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL)[
                "items"
            ]
            and not rbac.list_cluster_role(label_selector=selector).items
            and not rbac.list_cluster_role_binding(label_selector=selector).items
        ),
        "helm uninstall to remove the release's objects",
    )
    assert release.name not in release.helm("list", "--short").stdout.split()
    client.ApiextensionsV1Api(k8s_api).read_custom_resource_definition(f"{PLURAL}.{GROUP}")


def test_install_with_development_reload_is_admitted_in_a_restricted_namespace(
    release: Release, k8s_api: client.ApiClient
) -> None:
    """What `skaffold dev` deploys: the operator pod with its sources init container passes
    `restricted` and becomes Ready (--wait), and the pipeline asks for development mode."""
    release.write_values(
        {
            "development": {"reload": True},
            "pipelines": [pipeline_values("shop", f"shop-{release.name}")],
        }
    )
    release.install()
    core = client.CoreV1Api(k8s_api)
    (pod,) = operator_pods(core, release)
    assert running_ready(pod)
    assert [init.name for init in pod.spec.init_containers] == ["copy-sources"]
    assert pod.spec.containers[0].working_dir == "/app"
    body = client.CustomObjectsApi(k8s_api).get_namespaced_custom_object(
        GROUP, VERSION, release.namespace, PLURAL, "shop"
    )
    assert body["spec"]["development"] == {"reload": True}


@pytest.fixture(scope="module")
def local_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engines]:
    engines.ensure_installed()
    with engines.running_engines(tmp_path_factory.mktemp("engines"), persistent=False) as running:
        yield running


def test_operator_as_the_charts_service_account_reconciles_the_charts_pipeline_to_ready(
    release: Release,
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    tmp_path: Path,
) -> None:
    """The chart's RBAC is enough: the only permissions the operator has are the chart's
    ClusterRole bound to the chart's ServiceAccount (which the harness authenticates as). And
    with the default Retain, the queues outlive the pipeline and the release."""
    custom = client.CustomObjectsApi(k8s_api)
    queue = f"chart-{release.name}"
    endpoints = {"sqs": local_engines.sqs_endpoint, "dynamodb": local_engines.dynamodb_endpoint}
    release.write_values(
        {
            # OperatorProcess authenticates as `order-operator` in the release namespace.
            "operator": {"serviceAccount": {"name": "order-operator"}},
            "pipelines": [
                pipeline_values(
                    "shop",
                    queue,
                    aws={"region": "us-east-1", "endpoints": endpoints},
                    processor={"scaling": {"pollingIntervalSeconds": 1}},
                )
            ],
        }
    )
    release.install()
    operator = OperatorProcess(kube_cluster, release.namespace, tmp_path)
    operator.start()
    try:

        def ready() -> bool:
            body = custom.get_namespaced_custom_object(
                GROUP, VERSION, release.namespace, PLURAL, "shop"
            )
            entry = condition(body, "Ready")
            return entry is not None and entry["status"] == "True"

        wait_for(ready, f"the chart's pipeline Ready; operator log: {operator.log_tail()}", 120)
        sqs = local_engines.sqs_client()
        assert sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        # Delete the pipeline first (as NOTES.txt says), then the release.
        custom.delete_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL, "shop")
        wait_for(
            lambda: (
                not custom.list_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL)[
                    "items"
                ]
            ),
            "the pipeline's finalizer to be released",
        )
    finally:
        operator.stop()
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    sqs = local_engines.sqs_client()
    assert sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    assert sqs.get_queue_url(QueueName=f"{queue}-dlq")["QueueUrl"]


def test_charts_service_account_may_do_what_the_operator_needs_and_nothing_broader(
    release: Release,
    service_account_api: Callable[[str, str], client.ApiClient],
) -> None:
    release.write_values({"pipelines": []})
    release.install()
    api = service_account_api(release.namespace, release.operator_name)
    reviews = client.AuthorizationV1Api(api)

    def allowed(verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=release.namespace,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                )
            )
        )
        return bool(reviews.create_self_subject_access_review(review).status.allowed)

    # (verb, resource, group, subresource): what the operator needs, and broader rights it lacks.
    expected = {
        ("watch", "orderpipelines", "order-pipeline.dev", ""): True,
        ("patch", "orderpipelines", "order-pipeline.dev", "status"): True,
        ("create", "deployments", "apps", ""): True,
        ("patch", "deployments", "apps", "scale"): True,
        ("create", "horizontalpodautoscalers", "autoscaling", ""): True,
        ("create", "poddisruptionbudgets", "policy", ""): True,
        ("create", "events", "", ""): True,
        ("get", "secrets", "", ""): True,
        ("delete", "deployments", "apps", ""): False,
        ("update", "orderpipelines", "order-pipeline.dev", ""): False,
        ("delete", "orderpipelines", "order-pipeline.dev", ""): False,
        ("list", "secrets", "", ""): False,
        ("create", "pods", "", ""): False,
        ("create", "clusterroles", "rbac.authorization.k8s.io", ""): False,
        ("create", "rolebindings", "rbac.authorization.k8s.io", ""): False,
        ("delete", "services", "", ""): False,
        ("create", "customresourcedefinitions", "apiextensions.k8s.io", ""): False,
    }
    assert {access: allowed(*access) for access in expected} == expected
