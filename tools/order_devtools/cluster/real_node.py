"""One real Kubernetes node beside the kwok nodes: containerd (private root, state and socket)
with runc and the CNI bridge from Debian, and a kubelet and kube-proxy from the control plane's
own build. Pods that tolerate its taint and select its label really run there.

`start_cluster(real_node=True)` drives it in three steps: `prepare_host` (the bridge, whose
address the apiserver then binds, and the cgroup root) before the control plane starts,
`start_runtime` (containerd, the pause image) while the apiserver boots, and `join` (kubelet,
kube-proxy) once the API is up. `stop` undoes all of it, host changes included (`host_changes`).

Nothing listens on a public interface: the kubelet, the apiserver and NodePorts use the bridge
address; health, metrics and containerd's streaming server use loopback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from order_devtools.cluster import image_archives
from order_devtools.cluster.access import ClusterAccess
from order_devtools.cluster.component_process import (
    ComponentProcess,
    free_loopback_ports,
    spawn_component,
    wait_until,
)
from order_devtools.cluster.components import LOOPBACK, component_env, node_is_ready
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.host_changes import IPTABLES_FAMILIES, HostChanges
from order_devtools.cluster.toolchain import Toolchain

REAL_NODE_NAME = "real-node-0"
REAL_NODE_TAINT = {"key": "order-pipeline.dev/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_LABELS = {"type": "real"}
# Disjoint from kwok's fake pod IPs (10.244.0.0/16) and the Service range (10.96.0.0/16).
POD_SUBNET = ipaddress.ip_network("10.245.0.0/24")
BRIDGE_ADDRESS = str(POD_SUBNET[1])
"""The pods' gateway, the node's IP, and where the apiserver listens when a real node runs."""
BRIDGE_NAME = "opnode0"
CNI_NETWORK_NAME = "order-pipeline-real-node"
CGROUP_NAME = "order-pipeline-real-node"
CNI_PLUGIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap")
PAUSE_ARCHIVE = Path("images") / "pause.tar"
"""The static pause image, relative to the toolchain root (made by tools/k8s-build/build.sh)."""
NODE_BINARIES = ("kubelet", "kube-proxy")
HOST_COMMANDS = (
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "ip",
    "nft",
    "umount",
    *(f"{family}{suffix}" for family in IPTABLES_FAMILIES for suffix in ("", "-save", "-restore")),
)
# Debian puts runc, iptables and ip in sbin, which a non-login shell may not have on PATH.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NODE_PORT_NAMES = ("kubelet", "kubelet_healthz", "proxy_healthz", "proxy_metrics")
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")


@dataclass(frozen=True)
class RealNodeSettings:
    """How the real node is set up; the defaults are what the tests use."""

    name: str = REAL_NODE_NAME
    cluster_dns: tuple[str, ...] = (BRIDGE_ADDRESS,)
    """Nameservers the kubelet gives pods with `dnsPolicy: ClusterFirst`: by default the CoreDNS
    `start_cluster` runs on the bridge address. Empty: pods get the host's resolv.conf."""
    addons: bool = True
    """Start cluster DNS and metrics-server with the node (`addons.start_real_node_addons`)."""
    cluster_domain: str = "cluster.local"
    max_pods: int = 40


def _search_path() -> str:
    return f"{os.environ.get('PATH', '')}{os.pathsep}{SYSTEM_PATH}"


def host_command(name: str) -> str | None:
    return shutil.which(name, path=_search_path())


def missing_prerequisites(toolchain: Toolchain) -> list[str]:
    """What this host lacks to run a real node, each named with where it comes from."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the node creates a bridge, cgroups, mounts and iptables rules)")
    commands = [name for name in HOST_COMMANDS if host_command(name) is None]
    if commands:
        missing.append(
            f"commands {', '.join(commands)} (Debian packages containerd, runc, iptables, "
            "nftables, iproute2, mount)"
        )
    plugins = [name for name in CNI_PLUGINS if not os.access(CNI_PLUGIN_DIR / name, os.X_OK)]
    if plugins:
        missing.append(
            f"CNI plugins {', '.join(plugins)} in {CNI_PLUGIN_DIR} "
            "(Debian package containernetworking-plugins)"
        )
    for name in NODE_BINARIES:
        if not os.access(toolchain.bin_dir / name, os.X_OK):
            missing.append(f"{name} in {toolchain.bin_dir} (tools/k8s-build/build.sh builds it)")
    if not (toolchain.root / PAUSE_ARCHIVE).is_file():
        missing.append(f"the pause image {toolchain.root / PAUSE_ARCHIVE} (build.sh makes it)")
    if not Path("/proc/sys/net/bridge").is_dir():
        missing.append("bridge netfilter (kernel module br_netfilter)")
    return missing


def check_prerequisites(toolchain: Toolchain) -> None:
    missing = missing_prerequisites(toolchain)
    if missing:
        raise ClusterError("a real node cannot run here; missing: " + "; ".join(missing))


def bridge_owner() -> str | None:
    """The state directory of the cluster whose node holds the bridge, or None when there is
    no bridge (only one real node can run per host: kube-proxy's chains are global)."""
    link = Path("/sys/class/net") / BRIDGE_NAME
    if not link.exists():
        return None
    try:
        return (link / "ifalias").read_text().strip()
    except OSError:
        return ""


@dataclass
class RealNode:
    """The real node of one cluster: its settings, ports, processes and host changes, saved
    with the cluster so that `cluster down` (another process) can stop it."""

    node_dir: Path
    toolchain: Toolchain
    settings: RealNodeSettings = field(default_factory=RealNodeSettings)
    ports: dict[str, int] = field(default_factory=dict)
    host: HostChanges | None = None
    processes: list[ComponentProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds each start step took (containerd, kubelet Ready, kube-proxy synced, ...)."""

    # -- where things are

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def address(self) -> str:
        return BRIDGE_ADDRESS

    @property
    def pod_subnet(self) -> str:
        return str(POD_SUBNET)

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    @property
    def log_dir(self) -> Path:
        return self.node_dir / "logs"

    @property
    def pause_archive(self) -> Path:
        return self.toolchain.root / PAUSE_ARCHIVE

    def is_running(self) -> bool:
        return bool(self.processes) and all(process.is_alive() for process in self.processes)

    # -- start

    def prepare_host(self, *, owner: str, save: Callable[[], None]) -> None:
        """Record the host's state, then make the bridge (with the node's address, so the
        apiserver can bind it) and the cgroup root. `save` persists each step first."""
        self.host = HostChanges.record(bridge=BRIDGE_NAME, cgroup_name=CGROUP_NAME)
        save()
        self.host.create_bridge(f"{BRIDGE_ADDRESS}/{POD_SUBNET.prefixlen}", owner)
        self.host.create_cgroup_root()
        self.host.enable_bridge_netfilter()

    def start_runtime(
        self, *, deadline: float, exit_with_parent: bool, save: Callable[[], None]
    ) -> None:
        """containerd with the CNI configuration, and the pause image imported."""
        started = time.monotonic()
        for sub_dir in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "kube-proxy", "logs"):
            (self.node_dir / sub_dir).mkdir(parents=True, exist_ok=True)
        pause_image = self._sandbox_image()
        config = self.node_dir / "containerd" / "config.toml"
        config.write_text(self._containerd_config(pause_image))
        conflist = self.node_dir / "cni" / "net.d" / f"10-{CNI_NETWORK_NAME}.conflist"
        conflist.write_text(json.dumps(self._cni_config(), indent=2) + "\n")
        containerd = self._spawn(
            "containerd",
            [str(host_command("containerd")), "--config", str(config)],
            exit_with_parent=exit_with_parent,
            save=save,
        )
        wait_until(
            "containerd's socket",
            self.containerd_socket.is_socket,
            deadline,
            [containerd],
        )
        self.timings["containerd"] = round(time.monotonic() - started, 2)
        self.import_images([self.pause_archive])
        self.timings["pause image"] = round(time.monotonic() - started, 2)

    def join(
        self,
        cluster: ClusterAccess,
        *,
        deadline: float,
        exit_with_parent: bool,
        save: Callable[[], None],
    ) -> None:
        """Start the kubelet (wait until the node is Ready and schedulable), then kube-proxy
        (wait until it has written the Service rules once)."""
        started = time.monotonic()
        ports = free_loopback_ports(len(NODE_PORT_NAMES))
        self.ports = dict(zip(NODE_PORT_NAMES, ports, strict=True))
        kubelet_config = self.node_dir / "kubelet" / "config.json"
        kubelet_config.write_text(json.dumps(self._kubelet_config(cluster), indent=2) + "\n")
        labels = ",".join(f"{key}={value}" for key, value in REAL_NODE_LABELS.items())
        self._spawn(
            "kubelet",
            [
                str(self.toolchain.binary("kubelet")),
                f"--config={kubelet_config}",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--root-dir={self.node_dir / 'kubelet' / 'root'}",
                f"--cert-dir={self.node_dir / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={BRIDGE_ADDRESS}",
                f"--node-labels={labels}",
                "--v=1",
            ],
            exit_with_parent=exit_with_parent,
            save=save,
        )
        with cluster.api_client() as api:
            core = client.CoreV1Api(api)

            def schedulable() -> bool:
                node = core.read_node(self.name, _request_timeout=10)
                return node_is_ready(api.sanitize_for_serialization(node))

            wait_until(
                f"node {self.name} Ready and schedulable",
                schedulable,
                deadline,
                self.processes,
            )
        self.timings["kubelet to schedulable"] = round(time.monotonic() - started, 2)
        proxy_config = self.node_dir / "kube-proxy" / "config.json"
        proxy_config.write_text(json.dumps(self._kube_proxy_config(cluster), indent=2) + "\n")
        self._spawn(
            "kube-proxy",
            [str(self.toolchain.binary("kube-proxy")), f"--config={proxy_config}", "--v=1"],
            exit_with_parent=exit_with_parent,
            save=save,
        )
        wait_until(
            "kube-proxy's first sync of the Service rules",
            self._proxy_has_synced,
            deadline,
            self.processes,
        )
        self.timings["kube-proxy synced"] = round(time.monotonic() - started, 2)

    def import_images(self, archives: Iterable[Path]) -> list[str]:
        """Import image archives (docker-archive or OCI archive tarballs, e.g. from
        `buildah push`) into the node's containerd, where pods find them without a registry
        (`imagePullPolicy: Never` or `IfNotPresent`). Returns the images' references as
        Kubernetes resolves them; a pod may use the short form ("app:1" for
        "docker.io/library/app:1")."""
        references: list[str] = []
        for archive in archives:
            names = image_archives.image_names(archive)
            bare = [name for name in names if not image_archives.is_full_reference(name)]
            if not names or bare:
                raise ClusterError(
                    f"{archive} must name its images with a full reference such as "
                    f"localhost/app:1 (found {names or 'no name'})"
                )
            self._ctr("images", "import", str(archive), timeout=600)
            present = set(self._ctr("images", "list", "--quiet").split())
            for name in names:
                reference = image_archives.normalized_reference(name)
                # An OCI archive's name is stored as written; the CRI looks up the full form.
                if reference not in present:
                    self._ctr("images", "tag", "--force", name, reference)
                references.append(reference)
        return references

    def _ctr(self, *args: str, timeout: float = 60) -> str:
        argv = [
            str(host_command("ctr")),
            "--address",
            str(self.containerd_socket),
            "--namespace",
            "k8s.io",
            *args,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    # -- stop

    def stop_processes(self) -> None:
        """Stop kube-proxy, the kubelet and containerd (exactly the pids started). Pods are
        left to `restore_host`, which kills what is in the node's cgroups."""
        for process in reversed(self.processes):
            process.stop()

    def restore_host(self) -> list[str]:
        """Undo every host change; returns what could not be undone."""
        if self.host is None:
            return []
        return self.host.undo(self.node_dir, self.containerd_socket)

    # -- persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "node_dir": str(self.node_dir),
            "settings": {
                "name": self.settings.name,
                "cluster_dns": list(self.settings.cluster_dns),
                "cluster_domain": self.settings.cluster_domain,
                "max_pods": self.settings.max_pods,
                "addons": self.settings.addons,
            },
            "ports": self.ports,
            "host": self.host.to_json() if self.host is not None else None,
            "processes": [process.to_json() for process in self.processes],
            "timings": self.timings,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], toolchain: Toolchain) -> RealNode:
        settings = dict(data["settings"])
        settings["cluster_dns"] = tuple(settings["cluster_dns"])
        return cls(
            node_dir=Path(data["node_dir"]),
            toolchain=toolchain,
            settings=RealNodeSettings(**settings),
            ports={key: int(value) for key, value in data["ports"].items()},
            host=HostChanges.from_json(data["host"]) if data["host"] else None,
            processes=[ComponentProcess.from_json(process) for process in data["processes"]],
            timings={key: float(value) for key, value in data.get("timings", {}).items()},
        )

    # -- configuration files

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        exit_with_parent: bool,
        save: Callable[[], None],
    ) -> ComponentProcess:
        env = component_env(self.node_dir)
        env["PATH"] = _search_path()
        process = spawn_component(name, argv, self.log_dir, env, exit_with_parent=exit_with_parent)
        self.processes.append(process)
        save()
        return process

    def _sandbox_image(self) -> str:
        names = image_archives.image_names(self.pause_archive)
        if len(names) != 1:
            raise ClusterError(f"{self.pause_archive} should hold one image; it names {names}")
        return image_archives.normalized_reference(names[0])

    def _containerd_config(self, sandbox_image: str) -> str:
        base = self.node_dir / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        return f"""\
# containerd 1.6 for the real node: everything private to {base}
version = 2
root = "{base / "root"}"
state = "{base / "state"}"

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"

{cri}
  sandbox_image = "{sandbox_image}"
  # Not /var/run/netns: the namespaces stay inside the node's directory.
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "{LOOPBACK}"
  stream_server_port = "0"
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  # The host's bounding set may lack CAP_SYS_RESOURCE: then a negative oom_score_adj (pause
  # -998, Guaranteed pods -997) fails in runc init. Clamp every container to containerd's own.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{host_command("runc")}"
        Root = "{base / "runc"}"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_PLUGIN_DIR}"
    conf_dir = "{self.node_dir / "cni" / "net.d"}"
    max_conf_num = 1
"""

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK_NAME,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE_NAME,
                    "isGateway": True,
                    # No masquerading: pods talk only to the host, each other and Services.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(POD_SUBNET), "gateway": BRIDGE_ADDRESS}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.node_dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubelet_config(self, cluster: ClusterAccess) -> dict[str, Any]:
        socket = f"unix://{self.containerd_socket}"
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_ADDRESS,
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": LOOPBACK,
            "healthzPort": self.ports["kubelet_healthz"],
            # Only the apiserver (its kubelet client certificate, system:masters) may use the
            # kubelet's API; pods can reach the bridge address too.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cluster.state_dir / "pki" / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": socket,
            "imageServiceEndpoint": socket,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_NAME}",
            "cgroupsPerQOS": True,
            # 1.34's default, stated because 1.35 turns it around.
            "failCgroupV1": False,
            "failSwapOn": False,
            # Without CAP_SYS_RESOURCE a negative score cannot be set (see restrict_oom_score_adj).
            "oomScoreAdj": 0,
            "podLogsDir": str(self.node_dir / "kubelet" / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": self.settings.cluster_domain,
            "registerNode": True,
            "registerWithTaints": [REAL_NODE_TAINT],
            "maxPods": self.settings.max_pods,
            "serializeImagePulls": False,
            # Images are imported, never pulled: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusUpdateFrequency": "10s",
            "syncFrequency": "30s",
            "fileCheckFrequency": "20s",
        }
        if self.settings.cluster_dns:
            config["clusterDNS"] = list(self.settings.cluster_dns)
        return config

    def _kube_proxy_config(self, cluster: ClusterAccess) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(cluster.kubeconfig)},
            "hostnameOverride": self.name,
            "bindAddress": BRIDGE_ADDRESS,
            "mode": "iptables",
            "clusterCIDR": str(POD_SUBNET),
            # NodePorts answer on the bridge address only, never on a public interface.
            "nodePortAddresses": [f"{BRIDGE_ADDRESS}/32"],
            "healthzBindAddress": f"{LOOPBACK}:{self.ports['proxy_healthz']}",
            "metricsBindAddress": f"{LOOPBACK}:{self.ports['proxy_metrics']}",
            "oomScoreAdj": 0,
            # Zero: leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {
                # Else it sets net.ipv4.conf.all.route_localnet.
                "localhostNodePorts": False,
                "masqueradeAll": False,
                "syncPeriod": "10s",
                "minSyncPeriod": "0s",
            },
        }

    def _proxy_has_synced(self) -> bool:
        url = f"http://{LOOPBACK}:{self.ports['proxy_metrics']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                metrics = response.read().decode()
        except (OSError, urllib.error.URLError):
            return False
        # The pods and Services are IPv4; kube-proxy syncs each family on its own.
        synced = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} '
        return any(
            line.startswith(synced) and float(line.split()[-1]) > 0 for line in metrics.splitlines()
        )
