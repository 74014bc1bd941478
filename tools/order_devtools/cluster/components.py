"""What the control plane's components are started with: the flags of etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, their environment, the fake nodes kwok manages,
and how the components' own health endpoints are probed."""

from __future__ import annotations

import ipaddress
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from order_devtools import processes

if TYPE_CHECKING:
    # Only for annotations: the toolchain module itself needs COMPONENT_ORDER from here.
    from order_devtools.cluster.toolchain import Toolchain

LOOPBACK = processes.LOOPBACK_HOST
FAKE_NODE_COUNT = 2
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODE_TYPE = "kwok"
"""The fake nodes' `type` label (a real node carries another)."""
# kwok's pod IPs are never dialled; Service IPs only through a real node's kube-proxy.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The `kubernetes` Service's ClusterIP: the first address of the range.
KUBERNETES_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)[1])
FAKE_POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# Start order; `stop` goes in reverse (API clients first, etcd last) so nothing logs error storms.
COMPONENT_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
# The loopback ports one cluster listens on; `component_argv` reads them by these names.
PORT_NAMES = ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler")


def component_env(state_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    # kwok would otherwise also read ~/.kwok/kwok.yaml, whatever a developer left there.
    env["KWOK_WORKDIR"] = str(state_dir / "kwok")
    return env


def component_argv(
    toolchain: Toolchain,
    state_dir: Path,
    ports: Mapping[str, int],
    *,
    real_node_address: str | None = None,
) -> dict[str, list[str]]:
    """Every component's command line. With `real_node_address` (a real node's bridge address,
    see `real_node`) the apiserver listens there instead of on loopback and serves real pods."""
    pki = state_dir / "pki"
    kubeconfig = str(state_dir / "kubeconfig")
    etcd_url = f"http://{LOOPBACK}:{ports['etcd']}"
    etcd_peer_url = f"http://{LOOPBACK}:{ports['etcd_peer']}"
    argv = {
        "etcd": [
            str(toolchain.binary("etcd")),
            "--name=local",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={etcd_peer_url}",
            f"--initial-advertise-peer-urls={etcd_peer_url}",
            f"--initial-cluster=local={etcd_peer_url}",
            # Throw-away data: fsync only costs time.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(toolchain.binary("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={LOOPBACK}",
            # The `kubernetes` Service gets no endpoints: a loopback address is invalid there and
            # nothing in this cluster dials it (no kube-proxy, no real pods).
            "--endpoint-reconciler-type=none",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # On top of the default set (which already has PodSecurity, ServiceAccount, ...).
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
            "DefaultStorageClass,DefaultTolerationSeconds,PodSecurity,Priority,ResourceQuota,"
            "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            # Privileged pods must reach Pod Security Admission to be judged there.
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=true",
        ],
        "kube-controller-manager": [
            str(toolchain.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        ],
        "kube-scheduler": [
            str(toolchain.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
        ],
        "kwok": [
            str(toolchain.binary("kwok")),
            f"--kubeconfig={kubeconfig}",
            f"--config={toolchain.kwok_stages}",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={FAKE_POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ],
    }
    if real_node_address is not None:
        _serve_real_node(argv, pki, real_node_address)
    return argv


def _serve_real_node(argv: dict[str, list[str]], pki: Path, address: str) -> None:
    """What pods on a real node need from the control plane: an apiserver they can reach
    through the `kubernetes` Service, and one that reaches their kubelet for logs, exec and
    port-forward. Nothing listens on a public interface: `address` is the node's bridge."""
    apiserver = [
        flag
        for flag in argv["kube-apiserver"]
        if not flag.startswith("--bind-address=") and flag != "--endpoint-reconciler-type=none"
    ]
    apiserver += [
        f"--bind-address={address}",
        # The default (lease) reconciler publishes this address as the `kubernetes` endpoint.
        f"--advertise-address={address}",
        # Dial the kubelet at its node IP; the node name resolves nowhere.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}",
    ]
    argv["kube-apiserver"] = apiserver
    # The node lifecycle controller lifts a new node's not-ready taint on this period (5 s by
    # default), which is most of a real node's start time.
    argv["kube-controller-manager"].append("--node-monitor-period=1s")


def fake_node(name: str) -> dict[str, Any]:
    """A Node object that kwok (by its annotation) takes over and keeps Ready."""
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "type": FAKE_NODE_TYPE,
            },
        },
        "spec": {},
        "status": {"allocatable": resources, "capacity": resources, "phase": "Running"},
    }


def node_is_ready(node: Mapping[str, Any]) -> bool:
    """Whether a Node (in its JSON form) is Ready and schedulable."""
    conditions = node.get("status", {}).get("conditions", [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    # The node lifecycle controller lifts this taint after Ready; until then nothing schedules.
    not_ready_taint = any(
        taint.get("key") == "node.kubernetes.io/not-ready"
        for taint in node.get("spec", {}).get("taints", [])
    )
    return ready and not not_ready_taint


def probe_https_health(port: int) -> bool:
    """controller-manager and scheduler serve /healthz with a self-signed certificate they make
    at start; only liveness is checked here, on loopback, so the certificate is not verified."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(
            f"https://{LOOPBACK}:{port}/healthz", timeout=2, context=context
        ) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
