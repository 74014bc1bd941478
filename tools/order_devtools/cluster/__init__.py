"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes), all on 127.0.0.1 with random free ports; optionally one
real node (containerd, kubelet, kube-proxy) whose pods really run.

    python -m order_devtools.cluster up [--real-node] | down | status

The same code backs the pytest fixtures (`start_cluster`), including identities of real
ServiceAccounts (`Cluster.service_account_kubeconfig`) so RBAC is tested as a workload sees it.

Modules: `toolchain` (the built binaries), `pki` (certificates, keys, kubeconfigs),
`components` (each component's flags, the fake nodes), `component_process` (pid handles that
survive the starting command), `real_node` (containerd, kubelet and kube-proxy of a real
node), `host_changes` (what that node changes on the host, and undoing it), `image_archives`
(image names in docker/OCI archives), `access` (kubectl, helm, the `kubernetes` client and
ServiceAccount identities, for this or an existing cluster), `control_plane` (start, save, load,
stop), `addons` (CoreDNS and metrics-server beside it) and `cli`.
"""

from order_devtools.cluster.access import ClusterAccess, ExistingCluster
from order_devtools.cluster.addons import (
    CLUSTER_DOMAIN,
    start_cluster_dns,
    start_metrics_server,
    stop_addon,
)
from order_devtools.cluster.cli import main
from order_devtools.cluster.component_process import ComponentProcess
from order_devtools.cluster.components import COMPONENT_ORDER, FAKE_NODE_ANNOTATION
from order_devtools.cluster.control_plane import STATE_FILE_NAME, Cluster, start_cluster
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.pki import kubeconfig_text
from order_devtools.cluster.real_node import (
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    POD_SUBNET,
    REAL_NODE_LABELS,
    REAL_NODE_TAINT,
    RealNode,
    RealNodeSettings,
    missing_prerequisites,
)
from order_devtools.cluster.toolchain import (
    BUILD_SCRIPT,
    REPO_ROOT,
    Toolchain,
    ensure_toolchain,
    pinned_kubernetes_version,
)

__all__ = [
    "BRIDGE_ADDRESS",
    "BRIDGE_NAME",
    "BUILD_SCRIPT",
    "CLUSTER_DOMAIN",
    "COMPONENT_ORDER",
    "FAKE_NODE_ANNOTATION",
    "POD_SUBNET",
    "REAL_NODE_LABELS",
    "REAL_NODE_TAINT",
    "REPO_ROOT",
    "STATE_FILE_NAME",
    "Cluster",
    "ClusterAccess",
    "ClusterError",
    "ComponentProcess",
    "ExistingCluster",
    "RealNode",
    "RealNodeSettings",
    "Toolchain",
    "ensure_toolchain",
    "kubeconfig_text",
    "main",
    "missing_prerequisites",
    "pinned_kubernetes_version",
    "start_cluster",
    "start_cluster_dns",
    "start_metrics_server",
    "stop_addon",
]
