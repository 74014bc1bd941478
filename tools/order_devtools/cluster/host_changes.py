"""What a real node changes on the host outside its own directory, and how each change is undone.

The kubelet, containerd 1.6, the CNI bridge plugin and kube-proxy all reach beyond the
directories they are given: sysctls, iptables chains (and the nf_tables tables iptables-nft
creates for them), a bridge with veths, cgroups in every hierarchy, mounts, a few hard-coded
host paths, and shims that outlive containerd. `HostChanges` records the host's state before
the node touches it (saved with the cluster, so another process can undo it) and `undo` puts
everything back, touching only what was not there before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from order_devtools.cluster.component_process import process_start_ticks
from order_devtools.cluster.errors import ClusterError

CGROUP_MOUNT = Path("/sys/fs/cgroup")

# Set by the kubelet at start (protectKernelDefaults=false), the bridge plugin (isGateway) and
# kube-proxy; restored to what they were before the node started.
NODE_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.conf.all.route_localnet",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)

# Paths the kubelet and containerd 1.6 use whatever directories they are given:
# the device-plugin socket, /var/log/containers symlinks, libcni's result cache, shim sockets.
FIXED_HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/lib/cni", "/run/containerd")

# Chains the kubelet (KUBE-FIREWALL, canaries), kube-proxy (KUBE-*) and the CNI plugins
# (CNI-*: portmap, bridge masquerading) create.
NODE_CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES_FAMILIES = {"iptables": "ip", "ip6tables": "ip6"}
# kube-proxy's own nf_tables table (its nftables mode; iptables mode may touch it at start).
KUBE_PROXY_NFT_TABLE = "kube-proxy"


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        error = result.stderr.strip()
        raise ClusterError(f"{' '.join(argv)} failed ({result.returncode}): {error}")
    return result.stdout


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: Iterable[str]) -> dict[str, str]:
    """The current value of each sysctl that exists on this kernel."""
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = sysctl_path(name).read_text().strip()
    return values


def write_sysctl(name: str, value: str) -> None:
    sysctl_path(name).write_text(value + "\n")


def iptables_chains(command: str) -> dict[str, list[str]]:
    """table -> chain names, as `<command>-save` lists them."""
    chains: dict[str, list[str]] = {}
    table = ""
    for line in run([f"{command}-save"]).splitlines():
        if line.startswith("*"):
            table = line[1:]
            chains[table] = []
        elif line.startswith(":") and table:
            chains[table].append(line[1:].split()[0])
    return chains


def nft_objects() -> tuple[list[str], dict[str, int]]:
    """The nf_tables tables ("family table") and chains ("family table chain", with how many
    rules each holds)."""
    ruleset: dict[str, Any] = json.loads(run(["nft", "-j", "list", "ruleset"]) or "{}")
    tables: list[str] = []
    chains: dict[str, int] = {}
    for item in ruleset.get("nftables", []):
        if "table" in item:
            tables.append(f"{item['table']['family']} {item['table']['name']}")
        elif "chain" in item:
            chain = item["chain"]
            chains.setdefault(f"{chain['family']} {chain['table']} {chain['name']}", 0)
        elif "rule" in item:
            rule = item["rule"]
            key = f"{rule['family']} {rule['table']} {rule['chain']}"
            chains[key] = chains.get(key, 0) + 1
    return tables, chains


def path_tree(root: Path) -> list[str]:
    """`root` and everything below it (symlinks not followed), or [] when it does not exist."""
    if not root.exists() and not root.is_symlink():
        return []
    found = [str(root)]
    for directory, dir_names, file_names in os.walk(root):
        found.extend(str(Path(directory) / name) for name in [*dir_names, *file_names])
    return sorted(found)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first (the order they can be unmounted in)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda point: point.count("/"), reverse=True)


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy: the v1 controllers, name=systemd and the unified one on
    a hybrid host, or just /sys/fs/cgroup on a pure cgroup v2 host."""
    if (CGROUP_MOUNT / "cgroup.procs").exists():
        return [CGROUP_MOUNT]
    return sorted(path for path in CGROUP_MOUNT.iterdir() if (path / "cgroup.procs").exists())


def processes_in_cgroup(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(pid) for pid in procs.read_text().split())
    return pids


def processes_with_argument(argument: str, executable_name: str) -> list[int]:
    """Pids of processes named `executable_name` whose command line contains `argument`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(argv[0].decode(errors="replace")).name if argv else ""
        if name == executable_name and argument.encode() in argv:
            found.append(int(proc.name))
    return found


def kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> None:
    """SIGKILL each pid and wait until it has exited (a zombie counts as exited)."""
    remaining = set(pids)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if process_start_ticks(pid) is not None}
        time.sleep(0.05)


@dataclass
class HostChanges:
    """The host as it was before the node started, and the names of what the node adds.

    Saved (as JSON, inside the cluster's state file) before each change is made, so `undo`
    also cleans up after a start that was interrupted half-way.
    """

    bridge: str
    """The pods' bridge; the node creates it, so it is deleted whatever its state."""
    cgroup_name: str
    """The kubelet's cgroupRoot, made in every hierarchy."""
    sysctls_before: dict[str, str] = field(default_factory=dict)
    fixed_paths_before: dict[str, list[str]] = field(default_factory=dict)
    """Each fixed host path with everything that was below it (empty: it did not exist)."""
    iptables_chains_before: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    nft_tables_before: list[str] = field(default_factory=list)
    nft_chains_before: list[str] = field(default_factory=list)

    @classmethod
    def record(cls, *, bridge: str, cgroup_name: str) -> HostChanges:
        tables, chains = nft_objects()
        return cls(
            bridge=bridge,
            cgroup_name=cgroup_name,
            sysctls_before=read_sysctls(NODE_SYSCTLS),
            fixed_paths_before={path: path_tree(Path(path)) for path in FIXED_HOST_PATHS},
            iptables_chains_before={
                command: iptables_chains(command) for command in IPTABLES_FAMILIES
            },
            nft_tables_before=tables,
            nft_chains_before=list(chains),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostChanges:
        return cls(**data)

    # -- making the changes the node needs up front

    def create_bridge(self, address_with_prefix: str, owner: str) -> None:
        """The pods' bridge with the node's address, made before anything listens on it. The
        link's alias names the cluster that owns it, for the error a second node gets."""
        run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
        run(["ip", "link", "set", "dev", self.bridge, "alias", owner])
        run(["ip", "addr", "add", address_with_prefix, "dev", self.bridge])
        run(["ip", "link", "set", "dev", self.bridge, "up"])

    def create_cgroup_root(self) -> None:
        for hierarchy in cgroup_hierarchies():
            (hierarchy / self.cgroup_name).mkdir(exist_ok=True)
        cpuset = CGROUP_MOUNT / "cpuset"
        if (cpuset / "cpuset.cpus").exists():
            # A v1 cpuset cgroup accepts no task until it has cpus and mems of its own.
            for setting in ("cpuset.cpus", "cpuset.mems"):
                value = (cpuset / setting).read_text()
                (cpuset / self.cgroup_name / setting).write_text(value)

    @staticmethod
    def enable_bridge_netfilter() -> None:
        """Bridged traffic (pod to pod on the bridge) must pass iptables, or a pod cannot reach
        a Service whose endpoint is on the same bridge."""
        for name in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
            write_sysctl(name, "1")

    # -- undoing them

    def undo(self, node_dir: Path, containerd_socket: Path) -> list[str]:
        """Put the host back as it was; returns what could not be undone (empty when all was)."""
        problems: list[str] = []
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("processes", lambda: self._stop_leftover_processes(containerd_socket)),
            ("mounts", lambda: self._unmount(node_dir)),
            ("iptables", self._remove_chains),
            ("nf_tables", self._remove_empty_nft_objects),
            ("bridge", self._delete_bridge),
            ("sysctls", self._restore_sysctls),
            ("cgroups", self._remove_cgroups),
            ("host paths", self._remove_fixed_path_entries),
        )
        for name, step in steps:
            try:
                step()
            except (OSError, ClusterError, subprocess.SubprocessError) as error:
                problems.append(f"{name}: {error}")
        return problems

    def _stop_leftover_processes(self, containerd_socket: Path) -> None:
        # Containers (and their pause processes) live in the node's cgroups; shims are named
        # by the socket of the containerd that started them, and outlive it by design.
        kill_and_wait(processes_in_cgroup(self.cgroup_name))
        kill_and_wait(processes_with_argument(str(containerd_socket), "containerd-shim-runc-v2"))

    @staticmethod
    def _unmount(node_dir: Path) -> None:
        # Overlay root filesystems, network namespaces, the kubelet's tmpfs volumes.
        for point in mounts_under(node_dir):
            result = subprocess.run(["umount", point], capture_output=True, check=False)
            if result.returncode != 0:
                run(["umount", "--lazy", point])

    def _remove_chains(self) -> None:
        for command in IPTABLES_FAMILIES:
            script = _chain_removal_script(
                run([f"{command}-save"]), self.iptables_chains_before.get(command, {})
            )
            if script:
                run([f"{command}-restore", "--noflush"], stdin=script)

    def _remove_empty_nft_objects(self) -> None:
        # iptables-nft leaves the tables and base chains it made behind, empty.
        tables, chains = nft_objects()
        for table in tables:
            if table.split()[1] == KUBE_PROXY_NFT_TABLE and table not in self.nft_tables_before:
                run(["nft", "delete", "table", *table.split()])
        tables, chains = nft_objects()
        for chain, rule_count in chains.items():
            if chain not in self.nft_chains_before and rule_count == 0:
                run(["nft", "delete", "chain", *chain.split()])
        tables, chains = nft_objects()
        for table in tables:
            has_chains = any(chain.startswith(table + " ") for chain in chains)
            if table not in self.nft_tables_before and not has_chains:
                run(["nft", "delete", "table", *table.split()])

    def _delete_bridge(self) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            return
        # The pods' veths vanish with their network namespaces; any left is on the bridge.
        for port in Path(f"/sys/class/net/{self.bridge}/brif").iterdir():
            run(["ip", "link", "del", port.name], check=False)
        run(["ip", "link", "del", self.bridge])

    def _restore_sysctls(self) -> None:
        current = read_sysctls(self.sysctls_before)
        for name, value in self.sysctls_before.items():
            if current.get(name) != value:
                write_sysctl(name, value)

    def _remove_cgroups(self) -> None:
        left = []
        for hierarchy in cgroup_hierarchies():
            root = hierarchy / self.cgroup_name
            if not root.is_dir():
                continue
            # Deepest first: a cgroup directory can only be removed once it has no children.
            for directory in sorted(
                (path for path in root.rglob("*") if path.is_dir()),
                key=lambda path: len(path.parts),
                reverse=True,
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            try:
                root.rmdir()
            except OSError as error:
                left.append(f"{root} ({error.strerror})")
        if left:
            raise ClusterError(f"cgroups still in use: {', '.join(left)}")

    def _remove_fixed_path_entries(self) -> None:
        for path, before in self.fixed_paths_before.items():
            if not before:
                _remove(Path(path))
                continue
            known = set(before)
            # Deepest first, so a new directory goes after what is in it.
            for entry in sorted(path_tree(Path(path)), key=len, reverse=True):
                if entry not in known:
                    _remove(Path(entry))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file() or path.is_socket():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=False)


def _chain_removal_script(save_output: str, chains_before: Mapping[str, list[str]]) -> str:
    """An `iptables-restore --noflush` script that deletes the node's chains (those with a
    node prefix that were not there before) and every rule elsewhere that jumps to them."""
    script: list[str] = []
    table = ""
    new_chains: list[str] = []
    detach: list[str] = []
    for line in save_output.splitlines():
        if line.startswith("*"):
            table, new_chains, detach = line[1:], [], []
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(NODE_CHAIN_PREFIXES) and chain not in chains_before.get(table, []):
                new_chains.append(chain)
        elif line.startswith("-A "):
            words = line.split()
            targets = {words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-j", "-g")}
            if words[1] not in new_chains and targets & set(new_chains):
                detach.append("-D " + line[3:])
        elif line == "COMMIT" and new_chains:
            script.append(f"*{table}")
            script.extend(detach)
            script.extend(f"-F {chain}" for chain in new_chains)
            script.extend(f"-X {chain}" for chain in new_chains)
            script.append("COMMIT")
    return "\n".join(script) + "\n" if script else ""
