"""The cluster add-ons, run as host processes beside the control plane: CoreDNS, so pods resolve
Services by name, and metrics-server, the resource metrics API (`metrics.k8s.io`) that the HPA
and `kubectl top` read.

They are processes of the cluster like its components: `start_cluster_dns` and
`start_metrics_server` append them to `Cluster.processes` and save it, so `Cluster.stop` and
`cluster down` stop them (first, being last started); `stop_addon` stops one earlier and removes
its API objects. Each talks to the API server with a client certificate of its own and only the
RBAC rules upstream grants it. Why host processes rather than pods, and why the metrics API is
reached through an ExternalName Service on loopback: docs/cluster.md.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from order_devtools import processes
from order_devtools.cluster import pki
from order_devtools.cluster.component_process import ComponentProcess, spawn_component, wait_until
from order_devtools.cluster.components import FAKE_NODE_TYPE, LOOPBACK, component_env
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.real_node import BRIDGE_ADDRESS

if TYPE_CHECKING:  # control_plane starts the add-ons with the real node
    from order_devtools.cluster.control_plane import Cluster

CLUSTER_DOMAIN = "cluster.local"
"""The kubelet's `clusterDomain`; CoreDNS serves it (and the reverse zones) and nothing else."""
CLUSTER_DNS = "coredns"
METRICS_SERVER = "metrics-server"
ADDONS = (CLUSTER_DNS, METRICS_SERVER)
REAL_NODE_DNS_ADDRESS = BRIDGE_ADDRESS
"""Where pods on the real node find cluster DNS: the bridge's gateway, port 53."""

METRICS_API_SERVICE = "v1beta1.metrics.k8s.io"
METRICS_SERVICE_NAMESPACE = "kube-system"
# The aggregator names this host in the URL it proxies metrics.k8s.io requests to (see
# `metrics_api_registration`); metrics-server listens on loopback only.
METRICS_SERVER_HOST = "localhost"
METRICS_RESOLUTION_SECONDS = 15
"""How often metrics-server scrapes the kubelets (the HPA controller reads every 15 s too)."""
EXCLUDE_FAKE_NODES = f"type!={FAKE_NODE_TYPE}"
"""Which nodes metrics-server scrapes: kwok's nodes have no kubelet, and their made-up
addresses are not on this machine, so they are never dialled."""

_USERS = {CLUSTER_DNS: "order-pipeline:coredns", METRICS_SERVER: "order-pipeline:metrics-server"}


# -- CoreDNS


def cluster_dns_corefile(listen_address: str, port: int, ready_port: int, kubeconfig: Path) -> str:
    """CoreDNS answers for the cluster's zones from the API server and refuses every other name,
    so no query from a pod is forwarded off this machine."""
    zones = f"{CLUSTER_DOMAIN} in-addr.arpa ip6.arpa"
    server_keys = " ".join(f"{zone}:{port}" for zone in zones.split())
    return f"""{server_keys} {{
    bind {listen_address}
    errors
    log {{
        class denial error
    }}
    ready {LOOPBACK}:{ready_port}
    kubernetes {zones} {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
}}
"""


def cluster_dns_rbac(user: str) -> list[dict[str, Any]]:
    """Upstream CoreDNS's ClusterRole (read Services, EndpointSlices, Pods, Namespaces)."""
    name = "order-pipeline:coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        _cluster_role_binding(name, name, user),
    ]


def start_cluster_dns(
    cluster: Cluster,
    listen_address: str,
    *,
    port: int = 53,
    exit_with_parent: bool = True,
    timeout_seconds: float = 30,
) -> ComponentProcess:
    """Start CoreDNS on `listen_address:port` (UDP and TCP); return once it has synced Services
    and EndpointSlices from the API server.

    For pods this is the bridge's gateway address and port 53 (resolv.conf names no port): the
    kubelet's `clusterDNS: [<that address>]` and `clusterDomain: cluster.local`. The address must
    already be on an interface, so create the bridge with it before calling this.
    """
    _check_listen_address(listen_address, port)
    deadline = time.monotonic() + timeout_seconds
    binary = cluster.toolchain.binary("coredns")
    kubeconfig = _identity_kubeconfig(cluster, CLUSTER_DNS)
    _apply(cluster, CLUSTER_DNS, cluster_dns_rbac(_USERS[CLUSTER_DNS]))
    ready_port = processes.free_port()
    corefile = _addon_dir(cluster) / "Corefile"
    corefile.write_text(cluster_dns_corefile(listen_address, port, ready_port, kubeconfig))
    process = _spawn(cluster, CLUSTER_DNS, [str(binary), "-conf", str(corefile)], exit_with_parent)
    # /ready answers 200 only once the kubernetes plugin has synced from the API server.
    wait_until(
        f"CoreDNS on {listen_address}:{port} to be ready",
        lambda: _answers_ok(ready_port, "/ready"),
        deadline,
        [process],
    )
    return process


def _check_listen_address(listen_address: str, port: int) -> None:
    address = ipaddress.ip_address(listen_address)
    if address.is_unspecified:
        raise ClusterError(
            f"CoreDNS must not listen on {listen_address} (every interface, eth0 included): "
            "give it the bridge's gateway address"
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((listen_address, port))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL:
                raise ClusterError(
                    f"{listen_address} is on no interface: create the bridge with that gateway "
                    "address before starting CoreDNS"
                ) from error
            raise ClusterError(
                f"CoreDNS cannot listen on {listen_address}:{port}: {error}"
            ) from error


# -- metrics-server


def metrics_server_rbac(user: str) -> list[dict[str, Any]]:
    """Upstream's RBAC for metrics-server, bound to its user."""
    reader = "system:aggregated-metrics-reader"
    name = "system:metrics-server"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        _cluster_role_binding(name, name, user),
        # Delegated authentication (the front proxy's CA) and authorization (SubjectAccessReview).
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": [_user_subject(user)],
        },
        _cluster_role_binding(
            "metrics-server:system:auth-delegator", "system:auth-delegator", user
        ),
        # Lets view/edit/admin read the metrics, as in a cluster with upstream's manifests.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": reader,
                "labels": {
                    f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"
                    for role in ("view", "edit", "admin")
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    ]


def metrics_api_registration(port: int, ca_pem: bytes) -> list[dict[str, Any]]:
    """metrics-server's registration as the metrics.k8s.io API.

    The APIService points at an ExternalName Service whose name is `localhost`: without
    --enable-aggregator-routing the aggregator sends requests for an ExternalName Service to
    `https://<externalName>:<APIService port>`, i.e. to metrics-server on the API server's own
    loopback. An EndpointSlice cannot do that (the API rejects loopback endpoint addresses).
    The aggregator verifies metrics-server's certificate for `metrics-server.kube-system.svc`
    against the cluster CA, which signed it.
    """
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVER, "namespace": METRICS_SERVICE_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": METRICS_SERVER_HOST,
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": METRICS_API_SERVICE},
            "spec": {
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {
                    "name": METRICS_SERVER,
                    "namespace": METRICS_SERVICE_NAMESPACE,
                    "port": port,
                },
                "caBundle": base64.b64encode(ca_pem).decode(),
            },
        },
    ]


def start_metrics_server(
    cluster: Cluster,
    *,
    node_selector: str = EXCLUDE_FAKE_NODES,
    exit_with_parent: bool = True,
    timeout_seconds: float = 60,
) -> ComponentProcess:
    """Start metrics-server on loopback, register it as the metrics.k8s.io API and return once
    the API server reports that APIService Available.

    It scrapes the kubelets of the nodes `node_selector` picks, at their InternalIP and the port
    in their status, accepting their self-signed serving certificates (kubelets here have no CA
    that signs them).
    """
    deadline = time.monotonic() + timeout_seconds
    binary = cluster.toolchain.binary("metrics-server")
    user = _USERS[METRICS_SERVER]
    kubeconfig = _identity_kubeconfig(cluster, METRICS_SERVER)
    certificate, key = pki.write_serving_certificate(
        cluster.state_dir / "pki",
        f"{METRICS_SERVER}-serving",
        [f"{METRICS_SERVER}.{METRICS_SERVICE_NAMESPACE}.svc"],
    )
    port = processes.free_port()
    # RBAC first: at start metrics-server reads the front proxy's CA, which it needs to trust
    # the API server's proxied requests.
    _apply(cluster, f"{METRICS_SERVER}-rbac", metrics_server_rbac(user))
    argv = [
        str(binary),
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={certificate}",
        f"--tls-private-key-file={key}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--node-selector={node_selector}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        "--kubelet-insecure-tls",
        f"--metric-resolution={METRICS_RESOLUTION_SECONDS}s",
    ]
    process = _spawn(cluster, METRICS_SERVER, argv, exit_with_parent)
    wait_until(
        "metrics-server's /livez",
        lambda: _answers_ok(port, "/livez", ca_file=cluster.ca_file),
        deadline,
        [process],
    )
    _apply(cluster, METRICS_SERVER, metrics_api_registration(port, cluster.ca_file.read_bytes()))
    last_condition: list[str] = []

    def available() -> bool:
        condition = metrics_api_condition(cluster)
        last_condition[:] = [condition[1]]
        return condition[0] == "True"

    try:
        wait_until(
            f"APIService {METRICS_API_SERVICE} to be Available", available, deadline, [process]
        )
    except ClusterError as error:
        raise ClusterError(f"{error}\nlast Available condition: {last_condition}") from error
    return process


def start_real_node_addons(cluster: Cluster, *, exit_with_parent: bool = True) -> None:
    """What a cluster with a real node runs beside it: CoreDNS on the bridge address (the
    kubelet's `clusterDNS`) and metrics-server (for HPAs and `kubectl top`)."""
    start_cluster_dns(cluster, REAL_NODE_DNS_ADDRESS, exit_with_parent=exit_with_parent)
    start_metrics_server(cluster, exit_with_parent=exit_with_parent)


def metrics_api_condition(cluster: Cluster) -> tuple[str, str]:
    """The metrics.k8s.io APIService's Available condition: (status, "reason: message")."""
    with cluster.api_client() as api:
        api_service = client.ApiregistrationV1Api(api).read_api_service(METRICS_API_SERVICE)
    for condition in (api_service.status.conditions if api_service.status else None) or []:
        if condition.type == "Available":
            return str(condition.status), f"{condition.reason}: {condition.message}"
    return "Unknown", "no Available condition yet"


# -- both


def stop_addon(cluster: Cluster, name: str) -> None:
    """Stop one add-on and delete its API objects (for metrics-server first its APIService: an
    unavailable aggregated API makes discovery fail, which stalls namespace deletion)."""
    if name not in ADDONS:
        raise ClusterError(f"{name} is not an add-on ({', '.join(ADDONS)})")
    manifests = [_addon_dir(cluster) / f"{name}.json"]
    if name == METRICS_SERVER:
        manifests.append(_addon_dir(cluster) / f"{METRICS_SERVER}-rbac.json")
    try:
        for manifest in manifests:
            if manifest.exists():
                cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(manifest))
    finally:
        # Even when the API server no longer answers, the process must not outlive the call.
        for component in [component for component in cluster.processes if component.name == name]:
            component.stop()
            cluster.processes.remove(component)
        cluster.save()


def _spawn(
    cluster: Cluster, name: str, argv: Sequence[str], exit_with_parent: bool
) -> ComponentProcess:
    if any(component.name == name and component.is_alive() for component in cluster.processes):
        raise ClusterError(f"{name} is already running for the cluster in {cluster.state_dir}")
    process = spawn_component(
        name,
        argv,
        cluster.state_dir / "logs",
        component_env(cluster.state_dir),
        exit_with_parent=exit_with_parent,
    )
    cluster.processes.append(process)
    cluster.save()  # so `cluster down` stops it even if the wait below fails
    return process


def _addon_dir(cluster: Cluster) -> Path:
    directory = cluster.state_dir / "addons"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def _identity_kubeconfig(cluster: Cluster, name: str) -> Path:
    certificate, key = pki.write_client_certificate(
        cluster.state_dir / "pki", f"{name}-client", _USERS[name]
    )
    kubeconfig = _addon_dir(cluster) / f"{name}.kubeconfig"
    pki.write_private(
        kubeconfig,
        pki.client_certificate_kubeconfig_text(
            cluster.server,
            cluster.ca_file.read_bytes(),
            _USERS[name],
            certificate.read_bytes(),
            key.read_bytes(),
        ),
    )
    return kubeconfig


def _apply(cluster: Cluster, name: str, objects: list[dict[str, Any]]) -> None:
    """Server-side apply, kept as a file so `stop_addon` deletes exactly these objects."""
    manifest = _addon_dir(cluster) / f"{name}.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=order-pipeline-addons",
        "-f", str(manifest),
    )  # fmt: skip


def _user_subject(user: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}


def _cluster_role_binding(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [_user_subject(user)],
    }


def _answers_ok(port: int, path: str, *, ca_file: Path | None = None) -> bool:
    """Whether a loopback health endpoint answers 200 (over TLS verified by `ca_file`, if given)."""
    try:
        if ca_file is None:
            response = urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=2)
        else:
            response = urllib.request.urlopen(
                f"https://{LOOPBACK}:{port}{path}",
                timeout=2,
                context=ssl.create_default_context(cafile=str(ca_file)),
            )
        with response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
