"""A snapshot of everything on the host a real node may change, to prove that stopping it puts
the host back: iptables and nf_tables rules, links, addresses and routes, the sysctls, cgroup
directories, mounts, the fixed host paths, and the node's kind of processes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from order_devtools.cluster import host_changes

# Counters and lifetimes change with traffic and time; they are not state the node owns.
_COUNTERS = re.compile(
    r"\[\d+:\d+\]|counter packets \d+ bytes \d+|valid_lft \S+ preferred_lft \S+|expires \d+sec"
)
# Besides the paths the node is known to use, where a CNI plugin or runtime could write.
WATCHED_PATHS = (*host_changes.FIXED_HOST_PATHS, "/etc/cni", "/run/netns", "/var/run/netns")


def _command(*argv: str) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    return _COUNTERS.sub("", result.stdout + result.stderr)


def _cgroup_dirs() -> list[str]:
    """The top-level cgroups of every hierarchy (the node's root among them while it runs);
    deeper ones belong to whoever owns the top-level one (the machine's own process runner
    makes some per command)."""
    return sorted(
        str(child)
        for hierarchy in host_changes.cgroup_hierarchies()
        for child in hierarchy.iterdir()
        if child.is_dir()
    )


def _node_processes(state_dir: Path) -> list[str]:
    """Processes whose command line names the cluster's state directory: containerd, the
    kubelet, kube-proxy, the shims (by their socket) and runc (by its root). Their containers
    are in the node's cgroups, compared above. (Other containerds on the machine do not count.)"""
    found = []
    marker = str(state_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"pid {proc.name}: {argv}")
    return sorted(found)


def snapshot(state_dir: Path) -> dict[str, object]:
    """The host as far as a real node of the cluster in `state_dir` can change it. Mounts are
    compared where the node makes them (its state directory, /run, /var, the cgroup tree), so
    other work on the machine mounting elsewhere does not count."""
    mount_roots = (f"{state_dir}/", "/run/", "/var/", "/sys/fs/cgroup/")
    mounts = sorted(
        point
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if (point := line.split()[4]).startswith(mount_roots)
    )
    return {
        "iptables-save": _command("iptables-save"),
        "ip6tables-save": _command("ip6tables-save"),
        "nft list ruleset": _command("nft", "list", "ruleset"),
        "links": sorted(
            line.split(":")[1].split("@")[0].strip()
            for line in _command("ip", "-o", "link", "show").splitlines()
        ),
        "addresses": _command("ip", "-o", "address", "show"),
        "routes": _command("ip", "route", "show", "table", "all"),
        "sysctls": host_changes.read_sysctls(host_changes.NODE_SYSCTLS),
        "cgroups": _cgroup_dirs(),
        "mounts": mounts,
        "paths": {path: host_changes.path_tree(Path(path)) for path in WATCHED_PATHS},
        "processes": _node_processes(state_dir),
    }


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What differs, item by item, in a form a failing test can print."""
    return [
        f"{key}:\n  before: {before[key]!r}\n  after:  {after.get(key)!r}"
        for key in before
        if before[key] != after.get(key)
    ]
