"""The real node: containers really run there, pass real probes, answer on real pod and Service
IPs, reach the apiserver as their ServiceAccount, and serve `kubectl logs/exec/port-forward`;
pods that do not ask for it stay on the kwok nodes. (That stopping the node leaves the host as it
was is checked by the `kube_cluster` fixture's teardown.)"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster

from .conftest import NamespaceFactory
from .k8s_helpers import port_forward, wait_for

# Needs the node this tool starts on this host, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

PROBE_SOURCE = Path(__file__).parent / "real_node_probe"
PROBE_IMAGE = "localhost/order-pipeline/node-probe:test"
PROBE_BINARY = "/node-probe"
SINGLE_BINARY_IMAGE = local_cluster.BUILD_SCRIPT.parent / "single-binary-image.py"
SERVE_PORT = 8080


@pytest.fixture(scope="session")
def probe_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/real_node_probe built static (standard library Go, no libc needed)."""
    binary = tmp_path_factory.mktemp("node-probe") / "node-probe"
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    build = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
        cwd=PROBE_SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"building the probe image's binary failed (needs go):\n{build.stderr}")
    return binary


def write_probe_archive(binary: Path, name: str, archive_format: str) -> Path:
    archive = binary.with_name(f"{name.replace('/', '_').replace(':', '_')}.{archive_format}.tar")
    subprocess.run(
        [
            sys.executable, str(SINGLE_BINARY_IMAGE), "--binary", str(binary),
            "--path", PROBE_BINARY, "--name", name, "--format", archive_format,
            "--output", str(archive),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return archive


@pytest.fixture(scope="session")
def probe_image(real_node: local_cluster.RealNode, probe_binary: Path) -> str:
    """The probe as a docker-archive image, imported into the node."""
    archive = write_probe_archive(probe_binary, PROBE_IMAGE, "docker")
    assert real_node.import_images([archive]) == [PROBE_IMAGE]
    return PROBE_IMAGE


def real_node_pod(
    name: str,
    image: str,
    args: list[str],
    *,
    labels: dict[str, str] | None = None,
    readiness_path: str | None = None,
    restart_policy: str = "Always",
) -> dict[str, Any]:
    """A pod that asks for the real node: its label and a toleration of its taint."""
    container: dict[str, Any] = {
        "name": "probe",
        "image": image,
        "imagePullPolicy": "Never",
        "command": [PROBE_BINARY, *args],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
    if readiness_path is not None:
        container["ports"] = [{"containerPort": SERVE_PORT, "name": "http"}]
        container["readinessProbe"] = {
            "httpGet": {"path": readiness_path, "port": SERVE_PORT},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": local_cluster.REAL_NODE_LABELS,
            "tolerations": [{**local_cluster.REAL_NODE_TAINT, "operator": "Equal"}],
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
        },
    }


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _http_get(url: str, timeout: float = 3) -> str:
    assert url.startswith("http://")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
        return str(response.read().decode())


def _eventually_get(url: str, timeout: float = 30) -> str:
    """GET `url` until it answers (kube-proxy writes a new Service's rules within a second or
    two)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _http_get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def core(k8s_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(k8s_api)


@pytest.fixture
def serving_pod(core: client.CoreV1Api, namespace: str, probe_image: str) -> client.V1Pod:
    """A Ready pod of the probe image serving HTTP on the real node (label app=probe)."""
    core.create_namespaced_pod(
        namespace,
        real_node_pod(
            "web", probe_image, ["serve"], labels={"app": "probe"}, readiness_path="/healthz"
        ),
    )
    wait_for(
        lambda: _is_ready(core.read_namespaced_pod("web", namespace)),
        "pod web Ready on the real node",
    )
    return core.read_namespaced_pod("web", namespace)


def test_real_node_is_ready_tainted_labelled_and_runs_the_pinned_kubelet(
    core: client.CoreV1Api, real_node: local_cluster.RealNode
) -> None:
    node = core.read_node(real_node.name)
    assert node.metadata.labels["type"] == "real"
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints or []]
    assert taints == [("order-pipeline.dev/real-node", "true", "NoSchedule")]
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == local_cluster.BRIDGE_ADDRESS
    info = node.status.node_info
    assert info.kubelet_version == local_cluster.pinned_kubernetes_version()
    assert info.container_runtime_version.startswith("containerd://1.")
    # The kwok nodes are still there and Ready beside it.
    kwok_nodes = core.list_node(label_selector="type=kwok").items
    assert len(kwok_nodes) >= 2


def test_pod_runs_for_real_passes_its_http_readiness_probe_and_answers_on_its_ip(
    core: client.CoreV1Api, namespace: str, serving_pod: client.V1Pod, probe_image: str
) -> None:
    assert serving_pod.spec.node_name == "real-node-0"
    status = serving_pod.status.container_statuses[0]
    assert status.container_id.startswith("containerd://")
    assert status.ready
    assert ipaddress.ip_address(serving_pod.status.pod_ip) in local_cluster.POD_SUBNET
    answer = _http_get(f"http://{serving_pod.status.pod_ip}:{SERVE_PORT}/from-the-host")
    assert answer == "hello from web path=/from-the-host\n"

    # The probe is really made: a pod whose readiness endpoint answers 503 runs but never
    # becomes Ready, and the kubelet says why.
    core.create_namespaced_pod(
        namespace, real_node_pod("unready", probe_image, ["serve"], readiness_path="/status/503")
    )
    wait_for(
        lambda: core.read_namespaced_pod("unready", namespace).status.phase == "Running",
        "pod unready Running",
    )
    time.sleep(3)
    assert not _is_ready(core.read_namespaced_pod("unready", namespace))
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=unready,reason=Unhealthy"
    ).items
    assert any("statuscode: 503" in event.message for event in events)


def test_cluster_ip_service_answers_through_kube_proxy(
    core: client.CoreV1Api, namespace: str, serving_pod: client.V1Pod
) -> None:
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "probe"},
            "spec": {
                "selector": {"app": "probe"},
                "ports": [{"port": 80, "targetPort": SERVE_PORT}],
            },
        },
    )
    cluster_ip = service.spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("10.96.0.0/16")
    answer = _eventually_get(f"http://{cluster_ip}/through-the-service")
    assert answer == "hello from web path=/through-the-service\n"


def test_pod_reaches_the_apiserver_as_its_service_account_through_the_kubernetes_service(
    core: client.CoreV1Api, namespace: str, probe_image: str
) -> None:
    core.create_namespaced_pod(
        namespace, real_node_pod("incluster", probe_image, ["apiserver"], restart_policy="Never")
    )
    wait_for(
        lambda: (
            core.read_namespaced_pod("incluster", namespace).status.phase in ("Succeeded", "Failed")
        ),
        "pod incluster to finish",
    )
    pod = core.read_namespaced_pod("incluster", namespace)
    log = core.read_namespaced_pod_log("incluster", namespace)
    assert pod.status.phase == "Succeeded", log
    version, pods = (json.loads(line) for line in log.splitlines())
    # Dialled at the `kubernetes` Service's ClusterIP, TLS verified against the mounted ca.crt.
    assert version["url"].startswith("https://10.96.0.1:443/")
    assert version["status"] == 200
    assert json.loads(version["body"])["gitVersion"] == local_cluster.pinned_kubernetes_version()
    # Authenticated as the pod's ServiceAccount, which RBAC gives nothing.
    assert pods["status"] == 403
    assert f"system:serviceaccount:{namespace}:default" in pods["body"]


def test_kubectl_logs_exec_and_port_forward_reach_the_container(
    kube_cluster: local_cluster.ClusterAccess, namespace: str, serving_pod: client.V1Pod
) -> None:
    token = uuid.uuid4().hex[:12]
    executed = kube_cluster.kubectl(
        "exec", "-n", namespace, "web", "--", PROBE_BINARY, "echo", "exec", token
    )
    assert executed.stdout == f"exec {token}\n"

    with port_forward(kube_cluster, namespace, "pod/web", SERVE_PORT) as local_port:
        answer = _eventually_get(f"http://127.0.0.1:{local_port}/forwarded-{token}", 10)
        assert answer == f"hello from web path=/forwarded-{token}\n"

    logs = kube_cluster.kubectl("logs", "-n", namespace, "web").stdout
    assert f"request GET /forwarded-{token}" in logs


def test_an_oci_archive_image_runs_under_its_short_name(
    core: client.CoreV1Api, namespace: str, real_node: local_cluster.RealNode, probe_binary: Path
) -> None:
    # As `buildah push IMAGE oci-archive:...` writes it: the name as given, not normalized.
    archive = write_probe_archive(probe_binary, "node-probe-oci:test", "oci")
    assert real_node.import_images([archive]) == ["docker.io/library/node-probe-oci:test"]
    core.create_namespaced_pod(
        namespace,
        real_node_pod(
            "from-oci", "node-probe-oci:test", ["echo", "ran", "oci"], restart_policy="Never"
        ),
    )
    wait_for(
        lambda: core.read_namespaced_pod("from-oci", namespace).status.phase == "Succeeded",
        "pod from-oci Succeeded",
    )
    assert core.read_namespaced_pod_log("from-oci", namespace) == "ran oci\n"


def test_pods_that_do_not_ask_for_the_real_node_stay_on_kwok_nodes(
    core: client.CoreV1Api, make_namespace: NamespaceFactory, real_node: local_cluster.RealNode
) -> None:
    namespace = make_namespace()
    apps = client.AppsV1Api(core.api_client)
    labels = {"app": "elsewhere"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "elsewhere"},
            "spec": {
                "replicas": 6,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "e2e-demo:1.0"}]},
                },
            },
        },
    )

    def all_scheduled() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=elsewhere").items
        return len(pods) == 6 and all(pod.spec.node_name for pod in pods)

    wait_for(all_scheduled, "6 pods scheduled")
    pods = core.list_namespaced_pod(namespace, label_selector="app=elsewhere").items
    assert {pod.spec.node_name for pod in pods} <= {"kwok-node-0", "kwok-node-1"}
    assert real_node.name not in {pod.spec.node_name for pod in pods}

    # Selecting the node without tolerating its taint is not enough.
    pod = real_node_pod("no-toleration", "e2e-demo:1.0", ["serve"])
    pod["spec"]["tolerations"] = []
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> bool:
        conditions = core.read_namespaced_pod("no-toleration", namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    wait_for(unschedulable, "pod no-toleration reported Unschedulable")
    assert core.read_namespaced_pod("no-toleration", namespace).spec.node_name is None


def test_a_second_real_node_on_the_host_is_refused_naming_the_running_one(
    kube_cluster: local_cluster.ClusterAccess, real_node: local_cluster.RealNode, tmp_path: Path
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "order_devtools.cluster", "up", "--real-node", "--dir",
         str(tmp_path / "second")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert second.returncode == 1
    owner = kube_cluster.state_dir
    assert f"a real node already runs on this host, for the cluster in {owner}" in second.stderr
    assert not (tmp_path / "second").exists()
    assert real_node.is_running()
