"""The cluster add-ons as host processes: CoreDNS answers the cluster's names from the API server
(and refuses every other name), metrics-server serves metrics.k8s.io through the API server's
aggregation layer, and both stop cleanly with their API objects removed.

Here CoreDNS listens on loopback, on a free port; with the real node it listens on the bridge's
gateway address, port 53, which is what pods' resolv.conf names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import processes
from order_devtools.cluster import addons

from .dns_query import RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, query_a
from .k8s_helpers import wait_for

# Starts processes of the local control plane, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

LOOPBACK = processes.LOOPBACK_HOST


@pytest.fixture
def local_control_plane(
    kube_cluster: local_cluster.ClusterAccess,
) -> Iterator[local_cluster.Cluster]:
    """The session cluster, without add-ons of its own for the test: a session with a real node
    runs them from the start (`addons.start_real_node_addons`); they are stopped here and started
    again afterwards, so each test starts, finds and stops exactly its own."""
    assert isinstance(kube_cluster, local_cluster.Cluster), "needs the local control plane"
    own = [p.name for p in kube_cluster.processes if p.name in addons.ADDONS]
    for name in own:
        addons.stop_addon(kube_cluster, name)
    yield kube_cluster
    if own:
        addons.start_real_node_addons(kube_cluster)


@pytest.fixture
def cluster_dns_port(local_control_plane: local_cluster.Cluster) -> Iterator[int]:
    """CoreDNS for the session cluster on 127.0.0.1:<this port>, stopped after the test."""
    port = processes.free_port()
    addons.start_cluster_dns(local_control_plane, LOOPBACK, port=port)
    yield port
    addons.stop_addon(local_control_plane, addons.CLUSTER_DNS)


@pytest.fixture
def metrics_server(local_control_plane: local_cluster.Cluster) -> Iterator[None]:
    addons.start_metrics_server(local_control_plane)
    yield
    addons.stop_addon(local_control_plane, addons.METRICS_SERVER)


def test_cluster_dns_answers_services_by_name_and_nothing_else(
    local_control_plane: local_cluster.Cluster,
    cluster_dns_port: int,
    k8s_api: client.ApiClient,
    namespace: str,
) -> None:
    core = client.CoreV1Api(k8s_api)
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    answer = query_a(LOOPBACK, cluster_dns_port, "kubernetes.default.svc.cluster.local")
    assert (answer.rcode, answer.addresses) == (RCODE_NOERROR, [kubernetes_ip])

    service = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="orders"),
            spec=client.V1ServiceSpec(
                selector={"app": "orders"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    name = f"orders.{namespace}.svc.cluster.local"
    # CoreDNS learns of the Service through its watch, a moment after it is created.
    wait_for(
        lambda: query_a(LOOPBACK, cluster_dns_port, name).addresses == [service.spec.cluster_ip],
        f"CoreDNS to answer {name} with {service.spec.cluster_ip}",
        timeout=20,
    )
    over_tcp = query_a(LOOPBACK, cluster_dns_port, name, tcp=True)
    assert (over_tcp.rcode, over_tcp.addresses) == (RCODE_NOERROR, [service.spec.cluster_ip])

    missing = query_a(LOOPBACK, cluster_dns_port, f"missing.{namespace}.svc.cluster.local")
    assert (missing.rcode, missing.addresses) == (RCODE_NXDOMAIN, [])
    # Names outside the cluster are refused, never forwarded off this machine.
    outside = query_a(LOOPBACK, cluster_dns_port, "example.org")
    assert (outside.rcode, outside.addresses) == (RCODE_REFUSED, [])

    core.delete_namespaced_service("orders", namespace)
    wait_for(
        lambda: query_a(LOOPBACK, cluster_dns_port, name).rcode == RCODE_NXDOMAIN,
        f"CoreDNS to forget {name} once the Service is deleted",
        timeout=20,
    )


def test_cluster_dns_is_a_cluster_process_until_stopped(
    local_control_plane: local_cluster.Cluster,
) -> None:
    port = processes.free_port()
    started = addons.start_cluster_dns(local_control_plane, LOOPBACK, port=port)
    try:
        # Saved with the cluster, so `cluster down` (another process) stops it too.
        saved = local_cluster.Cluster.load(local_control_plane.state_dir)
        assert saved is not None
        assert (addons.CLUSTER_DNS, started.pid) in [(c.name, c.pid) for c in saved.processes]
        with pytest.raises(local_cluster.ClusterError, match="already running"):
            addons.start_cluster_dns(local_control_plane, LOOPBACK, port=processes.free_port())
    finally:
        addons.stop_addon(local_control_plane, addons.CLUSTER_DNS)
    assert not started.is_alive()
    saved = local_cluster.Cluster.load(local_control_plane.state_dir)
    assert saved is not None
    assert addons.CLUSTER_DNS not in [component.name for component in saved.processes]
    with local_control_plane.api_client() as api, pytest.raises(client.ApiException) as gone:
        client.RbacAuthorizationV1Api(api).read_cluster_role("order-pipeline:coredns")
    assert gone.value.status == 404


def test_cluster_dns_refuses_addresses_it_must_not_or_cannot_listen_on(
    local_control_plane: local_cluster.Cluster,
) -> None:
    with pytest.raises(local_cluster.ClusterError, match="eth0"):
        addons.start_cluster_dns(local_control_plane, "0.0.0.0")
    # An address no interface has (TEST-NET-1): the bridge was not created first.
    with pytest.raises(local_cluster.ClusterError, match="create the bridge"):
        addons.start_cluster_dns(local_control_plane, "192.0.2.123")
    assert addons.CLUSTER_DNS not in [c.name for c in local_control_plane.processes]


def test_metrics_api_is_served_through_the_aggregation_layer(
    local_control_plane: local_cluster.Cluster,
    metrics_server: None,
    k8s_api: client.ApiClient,
    namespace: str,
) -> None:
    assert addons.metrics_api_condition(local_control_plane)[0] == "True"
    nodes = local_control_plane.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes")
    assert json.loads(nodes.stdout)["kind"] == "NodeMetricsList"

    # A workload's identity reads pod metrics only once RBAC grants it ("view" aggregates
    # metrics-server's reader role), as in a cluster set up with upstream's manifests.
    pod_metrics = f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
    denied = local_control_plane.run_as_service_account(
        namespace, "default", ["kubectl", "get", "--raw", pod_metrics]
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    client.RbacAuthorizationV1Api(k8s_api).create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="default-view"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default")],
        ),
    )
    allowed: list[str] = []

    def reads_pod_metrics() -> bool:
        result = local_control_plane.run_as_service_account(
            namespace, "default", ["kubectl", "get", "--raw", pod_metrics]
        )
        allowed[:] = [result.stdout]
        return result.returncode == 0

    wait_for(reads_pod_metrics, "the view role to grant pod metrics", timeout=20)
    assert json.loads(allowed[0])["kind"] == "PodMetricsList"


def test_stopping_metrics_server_unregisters_the_metrics_api(
    local_control_plane: local_cluster.Cluster,
) -> None:
    started = addons.start_metrics_server(local_control_plane)
    addons.stop_addon(local_control_plane, addons.METRICS_SERVER)
    assert not started.is_alive()
    # An APIService left behind unavailable would break discovery and stall namespace deletion.
    with local_control_plane.api_client() as api, pytest.raises(client.ApiException) as gone:
        client.ApiregistrationV1Api(api).read_api_service(addons.METRICS_API_SERVICE)
    assert gone.value.status == 404
    discovery = local_control_plane.kubectl("api-resources", check=False)
    assert discovery.returncode == 0, discovery.stderr
    assert "metrics.k8s.io" not in discovery.stdout
