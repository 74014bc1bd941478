"""Small helpers shared by the e2e tests."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from order_devtools import cluster as local_cluster


def wait_for(
    condition: Callable[[], bool], description: str, timeout: float = 60, interval: float = 0.2
) -> None:
    """Poll `condition` until it holds; fail the test with `description` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {description}")
        time.sleep(interval)


def wait_established(kube_cluster: local_cluster.ClusterAccess, crd: str) -> None:
    """`kubectl wait` errors out instead of waiting while a new CRD has no conditions yet."""
    wait_for(
        lambda: (
            kube_cluster.kubectl(
                "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=10s", check=False
            ).returncode
            == 0
        ),
        f"CRD {crd} Established",
    )


def go_module_dir(module: str, *, what: str) -> Path:
    """Download `module@version` through the Go module proxy (cached) and return its directory;
    fail the test with Go's own message when that is impossible."""
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(
            ["go", "mod", "download", "-json", module],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=scratch,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
    if result.returncode != 0:
        pytest.fail(f"could not get {what} ({module}): {result.stdout}{result.stderr}")
    return Path(json.loads(result.stdout)["Dir"])
