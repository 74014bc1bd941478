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

from .k8s_helpers import privileged_pod_refusal, wait_established, wait_for
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


ReleaseFactory = Callable[[], Release]


@pytest.fixture
def make_release(
    kube_cluster: local_cluster.ClusterAccess,
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> Iterator[ReleaseFactory]:
    """`make_release()`: a release (not yet installed) in a fresh `restricted` namespace."""
    made: list[Release] = []

    def make() -> Release:
        namespace = make_namespace(RESTRICTED)
        made.append(Release(kube_cluster, namespace, tmp_path / f"values-{len(made)}.yaml"))
        return made[-1]

    yield make
    # A failed test must not leave cluster-scoped objects behind.
    for installed in made:
        installed.helm("uninstall", installed.name, "--ignore-not-found", check=False)


@pytest.fixture
def release(make_release: ReleaseFactory) -> Release:
    return make_release()


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
    admission = client.AdmissionregistrationV1Api(k8s_api)
    suffix = release.name
    role_arn = "arn:aws:iam::123456789012:role/order-operator"
    base = {
        # Namespaced, as tenants sharing a cluster run it: a Role here, the admission policy
        # bound here only (so it judges no other test's pipelines in the shared cluster).
        "operator": {
            "serviceAccount": {"annotations": {"iam/role-arn": role_arn}},
            "watchNamespaces": [release.namespace],
        },
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
    assert rbac.read_namespaced_role(release.operator_name, release.namespace).rules
    assert admission.read_validating_admission_policy(
        f"{release.name}-order-pipeline-orderpipelines"
    )
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
            and not rbac.list_namespaced_role(release.namespace, label_selector=selector).items
            and not rbac.list_namespaced_role_binding(
                release.namespace, label_selector=selector
            ).items
            and not admission.list_validating_admission_policy(label_selector=selector).items
            and not admission.list_validating_admission_policy_binding(
                label_selector=selector
            ).items
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
            "operator": {"watchNamespaces": [release.namespace]},
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


def test_operator_as_the_charts_service_account_reconciles_the_charts_pipeline_to_ready(
    release: Release,
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    tmp_path: Path,
) -> None:
    """The chart's RBAC is enough: the only permissions the operator has are the chart's, bound
    to the chart's ServiceAccount (which the harness authenticates as): watching only its own
    namespace, a Role there and the ClusterRole's cluster-scoped rules. The admission policy
    admits the pipeline because the chart enables its endpoint overrides. And with the default
    Retain, the queues outlive the pipeline and the release."""
    custom = client.CustomObjectsApi(k8s_api)
    queue = f"chart-{release.name}"
    endpoints = {"sqs": local_engines.sqs_endpoint, "dynamodb": local_engines.dynamodb_endpoint}
    release.write_values(
        {
            # OperatorProcess authenticates as `order-operator` in the release namespace.
            "operator": {
                "serviceAccount": {"name": "order-operator"},
                "watchNamespaces": [release.namespace],
            },
            "admissionPolicy": {"allowedEndpoints": sorted(endpoints.values())},
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
    operator = OperatorProcess(
        kube_cluster, release.namespace, tmp_path, watch_namespaces=[release.namespace]
    )
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
    # Watching all namespaces, the admission policy would judge every other test's pipelines in
    # the shared cluster while this runs; it is not what this test is about.
    release.write_values({"admissionPolicy": {"enabled": False}, "pipelines": []})
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


def service_account_allowed(
    reviews: client.AuthorizationV1Api,
    account: tuple[str, str],
    namespace: str,
    access: tuple[str, str, str, str],
) -> bool:
    """A SubjectAccessReview: may the ServiceAccount (namespace, name) do `access` (verb,
    resource, group, subresource) in `namespace` ("" for cluster-wide)?"""
    account_namespace, name = account
    verb, resource, group, subresource = access
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{account_namespace}:{name}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace or None,
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
            ),
        )
    )
    return bool(reviews.create_subject_access_review(review).status.allowed)


# What an operator does in the namespaces it watches: (verb, resource, group, subresource).
NAMESPACED_ACCESS = [
    ("get", "secrets", "", ""),
    ("create", "deployments", "apps", ""),
    ("patch", "deployments", "apps", ""),
    ("patch", "deployments", "apps", "scale"),
    ("patch", "services", "", ""),
    ("watch", "orderpipelines", "order-pipeline.dev", ""),
    ("patch", "orderpipelines", "order-pipeline.dev", "status"),
    ("create", "events", "", ""),
]
# The cluster-scoped reads kopf needs to find its resource and the watched namespaces.
CLUSTER_ACCESS = [
    ("watch", "customresourcedefinitions", "apiextensions.k8s.io", ""),
    ("list", "namespaces", "", ""),
]


def test_each_environments_operator_is_denied_in_the_other_environments_namespace(
    make_release: ReleaseFactory,
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
) -> None:
    """Two releases on one cluster, staging and prod, each watching its own namespace: each
    operator may do its work in its own namespace and nothing in the other's (read Secrets,
    patch Deployments, touch pipelines), nor anything namespaced cluster-wide."""
    environments = {"staging": make_release(), "prod": make_release()}
    for installed in environments.values():
        installed.write_values(
            {"operator": {"watchNamespaces": [installed.namespace]}, "pipelines": []}
        )
        installed.install()
    reviews = client.AuthorizationV1Api(k8s_api)

    for subject in environments.values():
        account = (subject.namespace, subject.operator_name)
        for target in environments.values():
            own = target is subject
            found = {
                access: service_account_allowed(reviews, account, target.namespace, access)
                for access in NAMESPACED_ACCESS
            }
            assert found == dict.fromkeys(NAMESPACED_ACCESS, own), (subject.name, target.name)
        cluster_wide = {
            access: service_account_allowed(reviews, account, "", access)
            for access in NAMESPACED_ACCESS + CLUSTER_ACCESS
        }
        assert cluster_wide == dict.fromkeys(NAMESPACED_ACCESS, False) | dict.fromkeys(
            CLUSTER_ACCESS, True
        )

    # The chart's split of the operator's rules follows the apiserver's own notion of scope.
    listed = kube_cluster.kubectl("api-resources", "--namespaced=false", "--output=name")
    cluster_scoped = set(listed.stdout.split())
    rbac = client.RbacAuthorizationV1Api(k8s_api)

    def scoped_names(rules: list[client.V1PolicyRule]) -> set[str]:
        return {
            resource.split("/")[0] + (f".{group}" if group else "")
            for rule in rules
            for group in rule.api_groups
            for resource in rule.resources
        }

    staging = environments["staging"]
    cluster_role = rbac.read_cluster_role(staging.operator_name)
    role = rbac.read_namespaced_role(staging.operator_name, staging.namespace)
    assert scoped_names(cluster_role.rules) <= cluster_scoped
    assert not scoped_names(role.rules) & cluster_scoped


def pipeline_body(name: str, **aws: Any) -> dict[str, Any]:
    api_image = aws.pop("api_image", "order-pipeline/api:0.1.0")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OrderPipeline",
        "metadata": {"name": name},
        "spec": {
            "aws": aws,
            "queue": {"name": name},
            "tables": {"prefix": f"{name}-"},
            "api": {"image": api_image},
            "processor": {"image": "order-pipeline/processor:0.1.0"},
        },
    }


def test_admission_policy_limits_images_service_accounts_and_endpoints(
    release: Release,
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    make_namespace: Callable[..., str],
) -> None:
    """The chart's ValidatingAdmissionPolicy on the real apiserver: what the values allow is
    admitted, anything else refused with a message naming the field, the value and the chart
    value to change; the operator's own patches to a pipeline admitted earlier still pass."""
    custom = client.CustomObjectsApi(k8s_api)
    allowed_endpoint = "http://elasticmq.aws-local.svc:9324"

    def create(
        body: dict[str, Any], namespace: str = release.namespace, dry_run: bool = False
    ) -> Any:
        return custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All" if dry_run else None
        )

    def refusal(body: dict[str, Any]) -> str:
        with pytest.raises(client.ApiException) as refused:
            create(body)
        assert refused.value.status == 403, refused.value.body
        return str(json.loads(refused.value.body)["message"])

    kube_cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    wait_established(kube_cluster, f"{PLURAL}.{GROUP}")
    # Admitted before the policy exists, with an image the policy will refuse; kopf's finalizer.
    earlier = pipeline_body("earlier", api_image="elsewhere/api:1")
    earlier["metadata"]["finalizers"] = ["order-pipeline.dev/finalizer"]
    create(earlier)

    release.write_values(
        {
            "operator": {"watchNamespaces": [release.namespace]},
            "admissionPolicy": {
                "allowedImagePrefixes": ["registry.example.com/shop"],
                "allowedServiceAccounts": ["orders-irsa"],
                "allowedEndpoints": [allowed_endpoint],
            },
            "pipelines": [],
        }
    )
    release.install()

    def enforced() -> bool:
        try:
            create(pipeline_body("probe", api_image="elsewhere/api:1"), dry_run=True)
        except client.ApiException as error:
            return error.status == 403
        return False

    wait_for(enforced, "the admission policy to be enforced")

    # Refused, each with a message that says what and why.
    message = refusal(pipeline_body("image", api_image="evil.example.com/miner:1"))
    assert "spec.api.image evil.example.com/miner:1 not allowed" in message
    assert "registry.example.com/shop" in message
    assert "admissionPolicy.allowedImagePrefixes" in message
    # A prefix is a whole path segment, not any string that starts alike.
    message = refusal(pipeline_body("segment", api_image="registry.example.com/shop-x/api:1"))
    assert "spec.api.image registry.example.com/shop-x/api:1 not allowed" in message
    message = refusal(
        pipeline_body("account", credentials={"serviceAccountName": "namespace-admin"})
    )
    assert "spec.aws.credentials.serviceAccountName namespace-admin not allowed" in message
    assert "orders-irsa" in message
    assert "admissionPolicy.allowedServiceAccounts" in message
    message = refusal(pipeline_body("endpoint", endpoints={"sqs": "http://169.254.169.254/latest"}))
    assert "spec.aws.endpoints.sqs http://169.254.169.254/latest not allowed" in message
    assert allowed_endpoint in message
    assert "admissionPolicy.allowedEndpoints" in message

    # Admitted: the chart's images, an allowed prefix, ServiceAccount and endpoint.
    create(pipeline_body("defaults"))
    create(
        pipeline_body(
            "allowed",
            api_image="registry.example.com/shop/api:2",
            credentials={"serviceAccountName": "orders-irsa"},
            endpoints={"sqs": allowed_endpoint},
        )
    )

    # The policy binds to the watched namespaces only: elsewhere another release governs.
    elsewhere = make_namespace()
    create(pipeline_body("elsewhere", api_image="evil.example.com/miner:1"), namespace=elsewhere)

    # The earlier pipeline: its spec cannot change to anything refused, but the operator can
    # still release its finalizer, so deleting it does not hang.
    with pytest.raises(client.ApiException) as refused:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, release.namespace, PLURAL, "earlier",
            {"spec": {"api": {"image": "evil.example.com/miner:2"}}},
        )  # fmt: skip
    assert refused.value.status == 403
    custom.delete_namespaced_custom_object(GROUP, VERSION, release.namespace, PLURAL, "earlier")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, release.namespace, PLURAL, "earlier", {"metadata": {"finalizers": None}}
    )
    wait_for(
        lambda: (
            "earlier"
            not in [
                item["metadata"]["name"]
                for item in custom.list_namespaced_custom_object(
                    GROUP, VERSION, release.namespace, PLURAL
                )["items"]
            ]
        ),
        "the earlier pipeline to be deleted once its finalizer is gone",
    )
