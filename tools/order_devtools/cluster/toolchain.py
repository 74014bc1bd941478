"""The control plane's binaries: built once by tools/k8s-build/build.sh into a cache outside the
repository, found there by every later start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from order_devtools.cluster.components import COMPONENT_ORDER
from order_devtools.cluster.errors import ClusterError

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tools" / "k8s-build" / "build.sh"


@dataclass(frozen=True)
class Toolchain:
    """The built (or cached) binaries and the kwok stage configuration of one version key."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def kwok_stages(self) -> Path:
        return self.root / "kwok-stages.yaml"

    def binary(self, name: str) -> Path:
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise ClusterError(f"{name} is missing from {self.bin_dir}; run {BUILD_SCRIPT}")
        return path

    @property
    def kubectl(self) -> Path:
        return self.binary("kubectl")

    @property
    def helm(self) -> Path:
        return self.binary("helm")


def pinned_kubernetes_version() -> str:
    """The k8s.io/kubernetes version the recipe pins (what /version must report)."""
    go_mod = (BUILD_SCRIPT.parent / "kube" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)$", go_mod, re.MULTILINE)
    if match is None:
        raise ClusterError(f"no k8s.io/kubernetes requirement in {BUILD_SCRIPT.parent}/kube/go.mod")
    return match.group(1)


def ensure_toolchain(*, progress: Callable[[str], None] | None = None) -> Toolchain:
    """Run the build script (instant when everything is cached) and return its outputs.

    The script's progress lines are passed to `progress` (stderr by default) as they come, since
    a cold build takes many minutes; on failure the last of them become the error message.
    """
    report = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if not BUILD_SCRIPT.is_file():
        raise ClusterError(f"the build recipe {BUILD_SCRIPT} is missing")
    if shutil.which("bash") is None:
        raise ClusterError("'bash' is not on PATH; it runs the control plane build script")
    last_lines: deque[str] = deque(maxlen=25)
    # stdout carries only the result (the output directory); stderr is the progress log.
    with (
        tempfile.TemporaryFile("w+") as result_file,
        subprocess.Popen(
            ["bash", str(BUILD_SCRIPT)],
            stdout=result_file,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        ) as build,
    ):
        assert build.stderr is not None
        for raw_line in build.stderr:
            line = raw_line.rstrip("\n")
            last_lines.append(line)
            report(line)
        return_code = build.wait()
        result_file.seek(0)
        output_lines = result_file.read().split()
    if return_code != 0 or not output_lines:
        details = "\n".join(last_lines)
        raise ClusterError(
            f"building the Kubernetes control plane failed ({BUILD_SCRIPT}, exit {return_code}):"
            f"\n{details}"
        )
    toolchain = Toolchain(Path(output_lines[-1]))
    for name in COMPONENT_ORDER:
        toolchain.binary(name)
    return toolchain
