"""The local control plane as one object: start it (`start_cluster`), save and reload what was
started (`Cluster.save/load`, so `down` works from another process) and stop exactly that."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from order_devtools import processes
from order_devtools.cluster.access import ClusterAccess
from order_devtools.cluster.component_process import ComponentProcess, spawn_component
from order_devtools.cluster.components import (
    FAKE_NODE_COUNT,
    LOOPBACK,
    PORT_NAMES,
    component_argv,
    component_env,
    fake_node,
    node_is_ready,
    probe_https_health,
)
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.pki import ADMIN_USER, kubeconfig_text, write_credentials, write_private
from order_devtools.cluster.toolchain import Toolchain, ensure_toolchain

STATE_FILE_NAME = "cluster.json"
API_REQUEST_TIMEOUT_SECONDS = 10

# What a request to an API server that is still starting may raise; waits retry on all of them.
_NOT_READY_YET = (
    OSError,
    ClusterError,
    KeyError,
    ValueError,
    client.ApiException,
    urllib3.exceptions.HTTPError,
)


@dataclass
class Cluster(ClusterAccess):
    state_dir: Path
    toolchain: Toolchain
    ports: dict[str, int]
    admin_token: str
    processes: list[ComponentProcess]
    started_at: float
    ready_seconds: float = 0.0

    # -- paths

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

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
        return bool(self.processes) and all(component.is_alive() for component in self.processes)

    # -- lifecycle

    def stop(self, remove_state: bool = True) -> None:
        """Stop exactly the processes this cluster started (verified by pid and start time)."""
        for component in reversed(self.processes):
            component.stop()
        if remove_state:
            remove_state_dir(self.state_dir)

    def describe(self) -> str:
        lines = [
            f"Kubernetes control plane is up: {self.server} (state in {self.state_dir})",
            "  pids: "
            + ", ".join(f"{component.name}={component.pid}" for component in self.processes),
            f"  binaries: {self.toolchain.bin_dir}",
            "Use it with:",
            f"  export KUBECONFIG={self.kubeconfig}",
            f'  export PATH="{self.toolchain.bin_dir}:$PATH"   # kubectl, helm',
            "  kubectl get nodes",
        ]
        return "\n".join(lines)

    # -- persistence, so `down` and `status` can find what `up` started

    def save(self) -> None:
        state = {
            "toolchain": str(self.toolchain.root),
            "ports": self.ports,
            "admin_token": self.admin_token,
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
            "processes": [
                {
                    "name": component.name,
                    "pid": component.pid,
                    "start_ticks": component.start_ticks,
                    "log_path": component.log_path,
                }
                for component in self.processes
            ],
        }
        write_private(self.state_dir / STATE_FILE_NAME, json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> Cluster | None:
        try:
            state = json.loads((state_dir / STATE_FILE_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return cls(
            state_dir=state_dir,
            toolchain=Toolchain(Path(state["toolchain"])),
            ports={key: int(value) for key, value in state["ports"].items()},
            admin_token=str(state["admin_token"]),
            processes=[ComponentProcess(**component) for component in state["processes"]],
            started_at=float(state["started_at"]),
            ready_seconds=float(state.get("ready_seconds", 0.0)),
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


def _free_loopback_ports(count: int) -> list[int]:
    """`count` distinct free ports (free_port alone may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = processes.free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _wait_for(
    description: str,
    condition: Callable[[], bool],
    deadline: float,
    components: Sequence[ComponentProcess],
) -> None:
    last_error = ""
    while True:
        for component in components:
            if not component.is_alive():
                raise ClusterError(
                    f"{component.name} exited while waiting for {description}; "
                    f"last lines of {component.log_path}:\n{component.log_tail()}"
                )
        try:
            if condition():
                return
        except _NOT_READY_YET as error:
            last_error = str(error)
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {component.name} ({component.log_path}):\n{component.log_tail(15)}"
                for component in components
            )
            raise ClusterError(f"timed out waiting for {description} ({last_error})\n{logs}")
        time.sleep(0.1)


def remove_state_dir(state_dir: Path) -> None:
    """Delete a cluster state directory, refusing anything that does not look like one, so a
    mistyped `--dir` never deletes unrelated files."""
    if not state_dir.exists():
        return
    is_ours = (state_dir / STATE_FILE_NAME).exists() or (state_dir / "pki" / "tokens.csv").exists()
    if not is_ours and any(state_dir.iterdir()):
        raise ClusterError(f"{state_dir} is not empty and holds no cluster state; not deleting it")
    shutil.rmtree(state_dir)


def start_cluster(
    state_dir: Path,
    *,
    toolchain: Toolchain | None = None,
    node_count: int = FAKE_NODE_COUNT,
    timeout_seconds: float = 90,
    exit_with_parent: bool = True,
) -> Cluster:
    """Start a fresh control plane whose state lives in `state_dir` (emptied first) and return
    once the API is ready, the controllers and scheduler are healthy and the nodes are Ready.

    With `exit_with_parent` (the default, for test fixtures) the components die with this
    process; `cluster up` turns it off so the cluster outlives the command."""
    toolchain = toolchain or ensure_toolchain()
    started_at = time.time()
    started = time.monotonic()
    deadline = started + timeout_seconds
    state_dir = state_dir.resolve()
    remove_state_dir(state_dir)
    for sub_dir in ("logs", "etcd", "kwok"):
        (state_dir / sub_dir).mkdir(parents=True, mode=0o700)

    ports = dict(zip(PORT_NAMES, _free_loopback_ports(len(PORT_NAMES)), strict=True))
    admin_token = write_credentials(state_dir / "pki")
    cluster = Cluster(state_dir, toolchain, ports, admin_token, [], started_at)
    write_private(
        cluster.kubeconfig,
        kubeconfig_text(cluster.server, cluster.ca_file.read_bytes(), ADMIN_USER, admin_token),
    )
    argv = component_argv(toolchain, state_dir, ports)
    env = component_env(state_dir)
    log_dir = state_dir / "logs"

    def spawn(name: str) -> None:
        component = spawn_component(
            name, argv[name], log_dir, env, exit_with_parent=exit_with_parent
        )
        cluster.processes.append(component)
        cluster.save()  # after every start, so `down` can stop a half-started cluster

    try:
        with cluster.api_client() as api:
            core = client.CoreV1Api(api)
            # The apiserver retries etcd on its own, so both start at once.
            spawn("etcd")
            spawn("kube-apiserver")
            _wait_for(
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

            _wait_for(
                "the controller-manager's /healthz",
                lambda: probe_https_health(ports["controller_manager"]),
                deadline,
                cluster.processes,
            )
            _wait_for(
                "the scheduler's /healthz",
                lambda: probe_https_health(ports["scheduler"]),
                deadline,
                cluster.processes,
            )
            _wait_for(
                "the default ServiceAccount",
                default_service_account_exists,
                deadline,
                cluster.processes,
            )
            _wait_for(f"{node_count} Ready kwok nodes", nodes_ready, deadline, cluster.processes)
    except BaseException:
        cluster.stop(remove_state=False)  # keep the logs for the error report
        raise
    cluster.ready_seconds = round(time.monotonic() - started, 1)
    cluster.save()
    return cluster
