"""The local control plane is a real Kubernetes: versions, controllers, scheduler, garbage
collection, PDB status, RBAC, Pod Security Admission, CRD validation (with CEL) and Helm."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster

from .conftest import NamespaceFactory, ServiceAccountRunner
from .k8s_helpers import one_container_pod, privileged_pod_refusal, wait_for

# Tests the local control plane itself, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

CHART_DIR = Path(__file__).parent / "charts" / "e2e-demo"

# A container spec that the `restricted` Pod Security level accepts.
RESTRICTED_SECURITY_CONTEXT = client.V1SecurityContext(
    allow_privilege_escalation=False,
    run_as_non_root=True,
    run_as_user=10001,
    capabilities=client.V1Capabilities(drop=["ALL"]),
    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
)


def _deployment(name: str, replicas: int, labels: dict[str, str]) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="app",
                            image="e2e-demo:1.0",
                            security_context=RESTRICTED_SECURITY_CONTEXT,
                        )
                    ]
                ),
            ),
        ),
    )


def _running_ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def _error_message(error: client.ApiException) -> str:
    return str(json.loads(error.body).get("message", error.body))


def test_version_is_pinned_and_nodes_are_ready(
    kube_cluster: local_cluster.ClusterAccess, k8s_api: client.ApiClient, kubectl_path: Path
) -> None:
    pinned = local_cluster.pinned_kubernetes_version()
    version = client.VersionApi(k8s_api).get_code()
    assert version.git_version == pinned
    assert (version.major, version.minor) == ("1", pinned.split(".")[1])

    # kubectl (from the npm package) sees the same server.
    server = json.loads(
        kube_cluster.kubectl("version", "--output=json").stdout,
    )["serverVersion"]
    assert server["gitVersion"] == pinned

    # The kwok nodes (a session with a real node has that one too; test_real_node.py checks it).
    nodes = client.CoreV1Api(k8s_api).list_node(label_selector="type=kwok").items
    assert len(nodes) >= 2
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}["Ready"]
        assert ready == "True", node.metadata.name
        assert node.metadata.annotations[local_cluster.FAKE_NODE_ANNOTATION] == "fake"


def test_deployment_reaches_three_ready_pods_and_scales_down(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(k8s_api), client.CoreV1Api(k8s_api)
    apps.create_namespaced_deployment(namespace, _deployment("web", 3, {"app": "web"}))

    wait_for(
        lambda: len(_running_ready_pods(core, namespace, "app=web")) == 3,
        "3 Running and Ready pods",
    )
    wait_for(
        lambda: apps.read_namespaced_deployment_status("web", namespace).status.ready_replicas == 3,
        "the Deployment to report 3 ready replicas",
    )
    pods_before = {pod.metadata.name for pod in _running_ready_pods(core, namespace, "app=web")}
    # The scheduler really placed them on the fake nodes.
    scheduled = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert all(pod.spec.node_name for pod in scheduled)

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})

    wait_for(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 1,
        "the scale-down to remove 2 pods",
    )
    (remaining,) = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert remaining.metadata.name in pods_before
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 1


def test_deleting_an_owner_garbage_collects_its_dependents(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    owner_reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    for index in range(2):
        core.create_namespaced_config_map(
            namespace,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(
                    name=f"dependent-{index}", owner_references=[owner_reference]
                )
            ),
        )
    bystander = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bystander"))
    )

    core.delete_namespaced_config_map("owner", namespace)

    def config_map_names() -> set[str]:
        return {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}

    wait_for(
        lambda: not {"dependent-0", "dependent-1"} & config_map_names(),
        "the garbage collector to delete the dependents",
    )
    assert bystander.metadata.name in config_map_names()

    # The same controller cascades Deployment -> ReplicaSet -> Pods.
    apps.create_namespaced_deployment(namespace, _deployment("cascade", 2, {"app": "cascade"}))
    wait_for(
        lambda: len(_running_ready_pods(core, namespace, "app=cascade")) == 2,
        "the cascade Deployment's pods",
    )
    apps.delete_namespaced_deployment("cascade", namespace)
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace, label_selector="app=cascade").items
            and not core.list_namespaced_pod(namespace, label_selector="app=cascade").items
        ),
        "the ReplicaSet and pods of the deleted Deployment to be collected",
    )


def test_pod_disruption_budget_reports_allowed_disruptions(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    apps, policy = client.AppsV1Api(k8s_api), client.PolicyV1Api(k8s_api)
    core = client.CoreV1Api(k8s_api)
    apps.create_namespaced_deployment(namespace, _deployment("api", 3, {"app": "api"}))
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        client.V1PodDisruptionBudget(
            metadata=client.V1ObjectMeta(name="api"),
            spec=client.V1PodDisruptionBudgetSpec(
                min_available=2, selector=client.V1LabelSelector(match_labels={"app": "api"})
            ),
        ),
    )
    wait_for(lambda: len(_running_ready_pods(core, namespace, "app=api")) == 3, "3 Ready api pods")

    def status() -> Any:
        return policy.read_namespaced_pod_disruption_budget_status("api", namespace).status

    wait_for(lambda: status().current_healthy == 3, "the PDB to count 3 healthy pods")
    pdb_status = status()
    assert pdb_status.expected_pods == 3
    assert pdb_status.desired_healthy == 2
    assert pdb_status.disruptions_allowed == 1

    apps.patch_namespaced_deployment_scale("api", namespace, {"spec": {"replicas": 2}})
    wait_for(
        lambda: status().current_healthy == 2 and status().disruptions_allowed == 0,
        "the PDB to allow no disruption with 2 of minimum 2 pods",
    )


def test_rbac_denies_a_service_account_without_a_role_and_allows_exactly_its_role(
    k8s_api: client.ApiClient,
    make_namespace: NamespaceFactory,
    run_as_service_account: ServiceAccountRunner,
) -> None:
    core, rbac = client.CoreV1Api(k8s_api), client.RbacAuthorizationV1Api(k8s_api)
    namespace, other_namespace = make_namespace(), make_namespace()
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"))
    )

    def kubectl_as_robot(*args: str) -> subprocess.CompletedProcess[str]:
        return run_as_service_account(namespace, "robot", ["kubectl", *args])

    denied = kubectl_as_robot("get", "configmaps", "-n", namespace)
    assert denied.returncode != 0
    assert (
        f'User "system:serviceaccount:{namespace}:robot" cannot list resource "configmaps"'
        in denied.stderr
    )

    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="robot-reads-configmaps"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=namespace)
            ],
        ),
    )

    # The authorizer learns about new bindings through a watch: allow it a moment.
    wait_for(
        lambda: kubectl_as_robot("get", "configmaps", "-n", namespace).returncode == 0,
        "the RoleBinding to take effect",
        timeout=20,
    )
    allowed = kubectl_as_robot("get", "configmap", "settings", "-n", namespace, "-o", "name")
    assert allowed.stdout.strip() == "configmap/settings"

    # Exactly that: no other verb, resource or namespace.
    for args, forbidden in (
        (("create", "configmap", "new", "-n", namespace), 'cannot create resource "configmaps"'),
        (
            ("delete", "configmap", "settings", "-n", namespace),
            'cannot delete resource "configmaps"',
        ),
        (("get", "secrets", "-n", namespace), 'cannot list resource "secrets"'),
        (("get", "configmaps", "-n", other_namespace), 'cannot list resource "configmaps"'),
    ):
        result = kubectl_as_robot(*args)
        assert result.returncode != 0, args
        assert forbidden in result.stderr, (args, result.stderr)

    can_i = kubectl_as_robot("auth", "can-i", "--list", "-n", namespace)
    assert "configmaps" in can_i.stdout


def test_restricted_pod_security_rejects_privileged_and_accepts_compliant_pods(
    k8s_api: client.ApiClient, make_namespace: NamespaceFactory
) -> None:
    core = client.CoreV1Api(k8s_api)
    namespace = make_namespace(
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    )
    rejected = privileged_pod_refusal(core, namespace)
    assert rejected.status == 403
    message = _error_message(rejected)
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message

    compliant = one_container_pod(
        "compliant",
        container="app",
        image="e2e-demo:1.0",
        security_context=RESTRICTED_SECURITY_CONTEXT,
    )
    created = core.create_namespaced_pod(namespace, compliant)
    assert created.metadata.name == "compliant"
    wait_for(
        lambda: core.read_namespaced_pod("compliant", namespace).status.phase == "Running",
        "the compliant pod to run on a fake node",
    )


WIDGET_GROUP = "e2e.order-pipeline.test"
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{WIDGET_GROUP}"},
    "spec": {
        "group": WIDGET_GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["minReplicas", "maxReplicas"],
                                "properties": {
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "maximum": 50},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_schema_and_cel_rule_are_enforced_and_status_is_a_subresource(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    extensions = client.ApiextensionsV1Api(k8s_api)
    custom = client.CustomObjectsApi(k8s_api)
    try:
        extensions.create_custom_resource_definition(WIDGET_CRD)
    except client.ApiException as error:
        if error.status != 409:  # another test session's cluster never shares this one
            raise
    wait_for(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in extensions.read_custom_resource_definition(
                f"widgets.{WIDGET_GROUP}"
            ).status.conditions
            or []
        ),
        "the CRD to be Established",
    )

    def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{WIDGET_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        }

    def create(body: dict[str, Any]) -> Any:
        return custom.create_namespaced_custom_object(
            WIDGET_GROUP, "v1", namespace, "widgets", body
        )

    # The CEL rule, with the apiserver's own message.
    with pytest.raises(client.ApiException) as cel_rejected:
        create(widget("inverted", {"minReplicas": 5, "maxReplicas": 2}))
    assert cel_rejected.value.status == 422
    assert 'spec: Invalid value: "object": minReplicas must not exceed maxReplicas' in (
        _error_message(cel_rejected.value)
    )

    # The structural schema: types, bounds and required fields.
    with pytest.raises(client.ApiException) as schema_rejected:
        create(widget("wrong-type", {"minReplicas": "one", "maxReplicas": 99}))
    message = _error_message(schema_rejected.value)
    assert (
        'spec.minReplicas: Invalid value: "string": spec.minReplicas in body must be of type '
        "integer" in message
    )
    assert (
        "spec.maxReplicas: Invalid value: 99: spec.maxReplicas in body should be less than or "
        "equal to 50" in message
    )
    with pytest.raises(client.ApiException) as missing_rejected:
        create(widget("missing", {"minReplicas": 1}))
    assert "spec.maxReplicas: Required value" in _error_message(missing_rejected.value)

    created = create(widget("good", {"minReplicas": 1, "maxReplicas": 3}))
    assert created["spec"] == {"minReplicas": 1, "maxReplicas": 3}

    # status only changes through the /status subresource ...
    created["status"] = {"phase": "Ignored"}
    updated = custom.replace_namespaced_custom_object(
        WIDGET_GROUP, "v1", namespace, "widgets", "good", created
    )
    assert "status" not in updated
    with_status = custom.patch_namespaced_custom_object_status(
        WIDGET_GROUP, "v1", namespace, "widgets", "good", {"status": {"phase": "Ready"}}
    )
    assert with_status["status"] == {"phase": "Ready"}
    # ... and the spec does not change through it.
    with_status["spec"]["maxReplicas"] = 9
    custom.replace_namespaced_custom_object_status(
        WIDGET_GROUP, "v1", namespace, "widgets", "good", with_status
    )
    stored = custom.get_namespaced_custom_object(WIDGET_GROUP, "v1", namespace, "widgets", "good")
    assert stored["spec"]["maxReplicas"] == 3
    assert stored["status"] == {"phase": "Ready"}
    assert stored["metadata"]["generation"] == 1


def test_helm_install_upgrade_rollback_test_and_uninstall(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    helm_path: Path,
    namespace: str,
) -> None:
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        return kube_cluster.helm(*args, "--namespace", namespace, timeout=180)

    def message() -> str:
        return str(core.read_namespaced_config_map("demo-settings", namespace).data["message"])

    def replicas() -> int:
        return int(apps.read_namespaced_deployment("demo-web", namespace).spec.replicas)

    def revision() -> int:
        return int(json.loads(helm("status", "demo", "--output", "json").stdout)["version"])

    helm("install", "demo", str(CHART_DIR), "--wait", "--timeout", "120s")
    assert (message(), replicas(), revision()) == ("hello", 1, 1)
    assert core.read_namespaced_service("demo-web", namespace).spec.ports[0].port == 80

    helm(
        "upgrade", "demo", str(CHART_DIR), "--wait", "--timeout", "120s",
        "--set", "message=upgraded", "--set", "replicaCount=3",
    )  # fmt: skip
    assert (message(), replicas(), revision()) == ("upgraded", 3, 2)
    assert len(_running_ready_pods(core, namespace, "app.kubernetes.io/instance=demo")) == 3

    # `helm test` runs the chart's test pod; kwok completes it (exit 0).
    tested = helm("test", "demo", "--timeout", "60s")
    assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout

    helm("rollback", "demo", "1", "--wait", "--timeout", "120s")
    assert (message(), replicas(), revision()) == ("hello", 1, 3)
    history = json.loads(helm("history", "demo", "--output", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2, 3]
    assert history[-1]["description"] == "Rollback to 1"

    helm("uninstall", "demo", "--wait", "--timeout", "120s")
    wait_for(
        lambda: (
            not core.list_namespaced_config_map(
                namespace, label_selector="app.kubernetes.io/instance=demo"
            ).items
            and not apps.list_namespaced_deployment(
                namespace, label_selector="app.kubernetes.io/instance=demo"
            ).items
        ),
        "helm uninstall to remove the release's objects",
    )
    assert "demo" not in helm("list", "--short").stdout.split()


def test_service_account_identity_helper_uses_a_bound_token(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    namespace: str,
    service_account_api: Callable[[str, str], client.ApiClient],
) -> None:
    """The identity the RBAC tests run as is the real ServiceAccount, not admin."""
    client.CoreV1Api(k8s_api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="operator"))
    )
    as_operator = service_account_api(namespace, "operator")
    review = client.AuthenticationV1Api(as_operator).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:operator"
    assert "system:serviceaccounts" in review.status.user_info.groups
