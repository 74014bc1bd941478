"""The local control plane as one object: start it (`start_cluster`), optionally with a real
node beside the kwok nodes (`real_node`), save and reload what was started (`Cluster.save/load`,
so `down` works from another process) and stop exactly that."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from order_devtools.cluster import addons
from order_devtools.cluster.access import ClusterAccess
from order_devtools.cluster.component_process import (
    ComponentProcess,
    free_loopback_ports,
    spawn_component,
    wait_until,
)
from order_devtools.cluster.components import (
    FAKE_NODE_COUNT,
    KUBERNETES_SERVICE_IP,
    LOOPBACK,
    PORT_NAMES,
    component_argv,
    component_env,
    fake_node,
    node_is_ready,
    probe_https_health,
)
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.pki import (
    ADMIN_USER,
    kubeconfig_text,
    write_credentials,
    write_kubelet_client_certificate,
    write_private,
)
from order_devtools.cluster.real_node import (
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    RealNode,
    RealNodeSettings,
    bridge_owner,
    check_prerequisites,
)
from order_devtools.cluster.toolchain import Toolchain, ensure_toolchain

STATE_FILE_NAME = "cluster.json"
API_REQUEST_TIMEOUT_SECONDS = 10
# Added to the start timeout when a real node joins (its kubelet usually needs 1-6 s).
REAL_NODE_TIMEOUT_SECONDS = 60


@dataclass
class Cluster(ClusterAccess):
    state_dir: Path
    toolchain: Toolchain
    ports: dict[str, int]
    admin_token: str
    processes: list[ComponentProcess]
    started_at: float
    ready_seconds: float = 0.0
    api_host: str = LOOPBACK
    """Where the apiserver listens: loopback, or the real node's bridge address."""
    real_node: RealNode | None = None

    # -- paths

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    def process(self, name: str) -> ComponentProcess:
        for component in self.processes:
            if component.name == name:
                return component
        raise KeyError(name)

    def is_running(self) -> bool:
        control_plane_up = bool(self.processes) and all(
            component.is_alive() for component in self.processes
        )
        return control_plane_up and (self.real_node is None or self.real_node.is_running())

    @property
    def all_processes(self) -> list[ComponentProcess]:
        """The control plane's processes, then the real node's."""
        node_processes = self.real_node.processes if self.real_node is not None else []
        return [*self.processes, *node_processes]

    # -- lifecycle

    def stop(self, remove_state: bool = True) -> None:
        """Stop exactly the processes this cluster started (verified by pid and start time)
        and undo the real node's host changes. If some cannot be undone, the state directory
        is kept (a second `stop` retries) and the error says what is left."""
        node = self.real_node
        if node is not None:
            node.stop_processes()
        for component in reversed(self.processes):
            component.stop()
        if node is not None:
            problems = node.restore_host()
            if problems:
                raise ClusterError(
                    "the real node's host changes were not all undone (state kept in "
                    f"{self.state_dir}): " + "; ".join(problems)
                )
        if remove_state:
            remove_state_dir(self.state_dir)

    def describe(self) -> str:
        lines = [
            f"Kubernetes control plane is up: {self.server} (state in {self.state_dir})",
            "  pids: "
            + ", ".join(f"{component.name}={component.pid}" for component in self.processes),
            f"  binaries: {self.toolchain.bin_dir}",
            *self._describe_real_node(),
            "Use it with:",
            f"  export KUBECONFIG={self.kubeconfig}",
            f'  export PATH="{self.toolchain.bin_dir}:$PATH"   # kubectl, helm',
            "  kubectl get nodes",
        ]
        return "\n".join(lines)

    def _describe_real_node(self) -> list[str]:
        node = self.real_node
        if node is None:
            return []
        taint = "order-pipeline.dev/real-node=true:NoSchedule"
        return [
            f"  real node {node.name} ({node.address}, pods in {node.pod_subnet} on bridge "
            f"{BRIDGE_NAME}): pids "
            + ", ".join(f"{process.name}={process.pid}" for process in node.processes),
            f"    pods run there with nodeSelector type=real and a toleration of {taint}",
        ]

    # -- persistence, so `down` and `status` can find what `up` started

    def save(self) -> None:
        state = {
            "toolchain": str(self.toolchain.root),
            "ports": self.ports,
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
            "api_host": self.api_host,
            "processes": [component.to_json() for component in self.processes],
            "real_node": self.real_node.to_json() if self.real_node is not None else None,
        }
        write_private(self.state_dir / STATE_FILE_NAME, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Cluster | None:
        try:
            state = json.loads((state_dir / STATE_FILE_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        toolchain = Toolchain(Path(state["toolchain"]))
        node_state = state.get("real_node")
        return cls(
            state_dir=state_dir,
            toolchain=toolchain,
            ports={key: int(value) for key, value in state["ports"].items()},
            admin_token=str(state["admin_token"]),
            processes=[ComponentProcess.from_json(component) for component in state["processes"]],
            started_at=float(state["started_at"]),
            ready_seconds=float(state.get("ready_seconds", 0.0)),
            api_host=str(state.get("api_host", LOOPBACK)),
            real_node=RealNode.from_json(node_state, toolchain) if node_state else None,
        )


def api_readyz(api: client.ApiClient) -> str:
    """The body of the API server's /readyz ("ok" when ready); the generated API has no method
    for it, so the request goes through the client's own serialisation and authentication."""
    request = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
    response = api.call_api(*request, _request_timeout=API_REQUEST_TIMEOUT_SECONDS)
    body = response.read().decode(errors="replace")  # type: ignore[no-untyped-call]
    if response.status != 200:
        raise ClusterError(f"/readyz -> HTTP {response.status}: {body[:500]}")
    return str(body)


def list_nodes(api: client.ApiClient) -> list[dict[str, Any]]:
    """Every Node in its JSON form (what `node_is_ready` reads)."""
    nodes = client.CoreV1Api(api).list_node(_request_timeout=API_REQUEST_TIMEOUT_SECONDS).items
    # The client's own JSON form (camelCase, no unset fields), not `to_dict` (snake_case, Nones).
    return [
        api.sanitize_for_serialization(node)  # type: ignore[no-untyped-call]
        for node in nodes
    ]


def remove_state_dir(state_dir: Path) -> None:
    """Delete a cluster state directory, refusing anything that does not look like one, so a
    mistyped `--dir` never deletes unrelated files."""
    if not state_dir.exists():
        return
    is_ours = (state_dir / STATE_FILE_NAME).exists() or (state_dir / "pki" / "tokens.csv").exists()
    if not is_ours and any(state_dir.iterdir()):
        raise ClusterError(f"{state_dir} is not empty and holds no cluster state; not deleting it")
    shutil.rmtree(state_dir)


def _release_bridge(state_dir: Path) -> None:
    """Make way for this cluster's real node: undo the host changes of a stopped cluster's node
    that still holds the bridge, or refuse when a running one does (one real node per host)."""
    owner = bridge_owner()
    if owner is None:
        return
    previous = Cluster.load(Path(owner)) if owner else None
    if previous is None or previous.real_node is None:
        raise ClusterError(
            f"the bridge {BRIDGE_NAME} exists but no cluster state records it (owner "
            f"{owner!r}); remove it with `ip link del {BRIDGE_NAME}` (and check `iptables-save` "
            "for KUBE- chains left behind)"
        )
    if Path(owner) != state_dir and previous.is_running():
        raise ClusterError(
            f"a real node already runs on this host, for the cluster in {owner}; only one can "
            f"(stop it with `python -m order_devtools.cluster down --dir {owner}`)"
        )
    previous.stop(remove_state=False)


def start_cluster(
    state_dir: Path,
    *,
    toolchain: Toolchain | None = None,
    node_count: int = FAKE_NODE_COUNT,
    timeout_seconds: float = 90,
    exit_with_parent: bool = True,
    real_node: bool | RealNodeSettings = False,
) -> Cluster:
    """Start a fresh control plane whose state lives in `state_dir` (emptied first) and return
    once the API is ready, the controllers and scheduler are healthy and the nodes are Ready.

    With `exit_with_parent` (the default, for test fixtures) the components die with this
    process; `cluster up` turns it off so the cluster outlives the command.

    With `real_node` (True, or settings such as cluster DNS servers) a real node joins as well
    (`Cluster.real_node`, see `real_node.py`); the apiserver then listens on the node's bridge
    address instead of loopback, so that pods reach it. It needs root, containerd, runc and the
    CNI plugins; what is missing is named in the error."""
    toolchain = toolchain or ensure_toolchain()
    node_settings = RealNodeSettings() if real_node is True else real_node or None
    state_dir = state_dir.resolve()
    if node_settings is not None:
        check_prerequisites(toolchain)
        _release_bridge(state_dir)
    started_at = time.time()
    started = time.monotonic()
    deadline = started + timeout_seconds
    remove_state_dir(state_dir)
    for sub_dir in ("logs", "etcd", "kwok"):
        (state_dir / sub_dir).mkdir(parents=True, mode=0o700)

    ports = dict(zip(PORT_NAMES, free_loopback_ports(len(PORT_NAMES)), strict=True))
    node_address = BRIDGE_ADDRESS if node_settings is not None else None
    admin_token = write_credentials(
        state_dir / "pki",
        extra_ip_sans=(BRIDGE_ADDRESS, KUBERNETES_SERVICE_IP) if node_settings else (),
    )
    cluster = Cluster(state_dir, toolchain, ports, admin_token, [], started_at)
    if node_settings is not None:
        write_kubelet_client_certificate(state_dir / "pki")
        cluster.api_host = BRIDGE_ADDRESS
        cluster.real_node = RealNode(state_dir / "node", toolchain, node_settings)
    write_private(
        cluster.kubeconfig,
        kubeconfig_text(cluster.server, cluster.ca_file.read_bytes(), ADMIN_USER, admin_token),
    )
    argv = component_argv(toolchain, state_dir, ports, real_node_address=node_address)
    env = component_env(state_dir)
    log_dir = state_dir / "logs"

    def spawn(name: str) -> None:
        component = spawn_component(
            name, argv[name], log_dir, env, exit_with_parent=exit_with_parent
        )
        cluster.processes.append(component)
        cluster.save()  # after every start, so `down` can stop a half-started cluster

    node = cluster.real_node
    try:
        if node is not None:
            # The bridge first: the apiserver binds its address.
            node.prepare_host(owner=str(state_dir), save=cluster.save)
        with cluster.api_client() as api:
            core = client.CoreV1Api(api)
            # The apiserver retries etcd on its own, so both start at once.
            spawn("etcd")
            spawn("kube-apiserver")
            if node is not None:
                # Needs no API: overlaps the apiserver's start.
                node.start_runtime(
                    deadline=deadline, exit_with_parent=exit_with_parent, save=cluster.save
                )
            wait_until(
                "kube-apiserver /readyz",
                lambda: api_readyz(api) == "ok",
                deadline,
                cluster.processes,
            )
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                spawn(name)
            for index in range(node_count):
                core.create_node(client.V1Node.model_validate(fake_node(f"kwok-node-{index}")))

            def nodes_ready() -> bool:
                nodes = list_nodes(api)
                return len(nodes) >= node_count and all(node_is_ready(node) for node in nodes)

            def default_service_account_exists() -> bool:
                # Made by the controller-manager's serviceaccount controller: it is up and working.
                core.read_namespaced_service_account(
                    "default", "default", _request_timeout=API_REQUEST_TIMEOUT_SECONDS
                )
                return True

            wait_until(
                "the controller-manager's /healthz",
                lambda: probe_https_health(ports["controller_manager"]),
                deadline,
                cluster.processes,
            )
            wait_until(
                "the scheduler's /healthz",
                lambda: probe_https_health(ports["scheduler"]),
                deadline,
                cluster.processes,
            )
            wait_until(
                "the default ServiceAccount",
                default_service_account_exists,
                deadline,
                cluster.processes,
            )
            wait_until(f"{node_count} Ready kwok nodes", nodes_ready, deadline, cluster.processes)
        if node is not None:
            node.join(
                cluster,
                deadline=deadline + REAL_NODE_TIMEOUT_SECONDS,
                exit_with_parent=exit_with_parent,
                save=cluster.save,
            )
            if node.settings.addons:
                addons.start_real_node_addons(cluster, exit_with_parent=exit_with_parent)
    except BaseException as error:
        try:
            cluster.stop(remove_state=False)  # keep the logs for the error report
        except ClusterError as cleanup_error:
            error.add_note(str(cleanup_error))
        raise
    cluster.ready_seconds = round(time.monotonic() - started, 1)
    cluster.save()
    return cluster
