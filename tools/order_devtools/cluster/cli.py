"""python -m order_devtools.cluster up [--real-node] | down | status

`up` builds the binaries once (tools/k8s-build/build.sh, cached outside the repo), starts every
component from a per-cluster state directory (`.cluster/` by default), waits until the cluster is
usable, and writes an admin kubeconfig. `--real-node` adds a real node (containerd, kubelet,
kube-proxy; needs root) beside the kwok nodes. `down` stops exactly the processes `up` started
and undoes the real node's changes to the host.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client

from order_devtools.cluster.components import node_is_ready
from order_devtools.cluster.control_plane import (
    Cluster,
    api_readyz,
    list_nodes,
    remove_state_dir,
    start_cluster,
)
from order_devtools.cluster.errors import ClusterError
from order_devtools.cluster.toolchain import REPO_ROOT, ensure_toolchain

DEFAULT_CLUSTER_DIR = REPO_ROOT / ".cluster"


def _stop_stale(state_dir: Path) -> None:
    stale = Cluster.load(state_dir)
    if stale is not None:
        stale.stop(remove_state=False)
    remove_state_dir(state_dir)


def command_up(state_dir: Path, *, real_node: bool = False) -> int:
    existing = Cluster.load(state_dir)
    if existing is not None and existing.is_running():
        print("Already running (started by an earlier `cluster up`).")
        print(existing.describe())
        return 0
    if existing is not None or state_dir.exists():
        print(f"Cleaning up a stopped or half-started cluster in {state_dir}.", file=sys.stderr)
        _stop_stale(state_dir)
    toolchain = ensure_toolchain()
    cluster = start_cluster(
        state_dir, toolchain=toolchain, exit_with_parent=False, real_node=real_node
    )
    print(cluster.describe())
    print(f"Ready in {cluster.ready_seconds:.1f} s. Stop it with `make cluster-down`.")
    return 0


def command_down(state_dir: Path) -> int:
    cluster = Cluster.load(state_dir)
    if cluster is None:
        if state_dir.exists():
            remove_state_dir(state_dir)
            print(f"No cluster state found; removed {state_dir}.")
        else:
            print("No cluster is running.")
        return 0
    running = [component.name for component in cluster.all_processes if component.is_alive()]
    cluster.stop(remove_state=True)
    print(f"Stopped {', '.join(running) or 'nothing (all had exited)'}; removed {state_dir}.")
    return 0


def command_status(state_dir: Path) -> int:
    cluster = Cluster.load(state_dir)
    if cluster is None:
        print("No cluster is running.")
        return 1
    for component in cluster.all_processes:
        state = "running" if component.is_alive() else "EXITED"
        print(f"{component.name:<24} pid {component.pid:<8} {state}   log {component.log_path}")
    if not cluster.is_running():
        print("The cluster is not healthy; run `make cluster-down` and `make cluster-up`.")
        return 1
    try:
        with cluster.api_client() as api:
            version = client.VersionApi(api).get_code().git_version
            readyz = api_readyz(api)
            nodes = list_nodes(api)
    except (OSError, ClusterError, client.ApiException) as error:
        print(f"The API server does not answer: {error}")
        return 1
    ready_nodes = sum(1 for node in nodes if node_is_ready(node))
    print(
        f"API {cluster.server}: /readyz {readyz}, version {version}, "
        f"{ready_nodes}/{len(nodes)} nodes Ready"
    )
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m order_devtools.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CLUSTER_DIR,
        help=f"cluster state directory (default: {DEFAULT_CLUSTER_DIR})",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also start a real node (containerd, kubelet, kube-proxy; needs root)",
    )
    arguments = parser.parse_args(argv)
    state_dir: Path = arguments.dir.resolve()
    commands: dict[str, Callable[[Path], int]] = {
        "up": lambda directory: command_up(directory, real_node=arguments.real_node),
        "down": command_down,
        "status": command_status,
    }
    try:
        return commands[arguments.command](state_dir)
    except ClusterError as error:
        print(f"cluster {arguments.command} failed: {error}", file=sys.stderr)
        return 1
