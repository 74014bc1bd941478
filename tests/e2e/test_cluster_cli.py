"""`python -m order_devtools.cluster up|status|down` (what `make cluster-up/down` run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from order_devtools import cluster as local_cluster

# Tests the local control plane itself, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

# The budget for `cluster up` with cached binaries.
WARM_UP_BUDGET_SECONDS = 30


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "order_devtools.cluster", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_is_idempotent_and_down_stops_exactly_its_processes(
    k8s_toolchain: local_cluster.Toolchain, tmp_path: Path
) -> None:
    state_dir = tmp_path / "cli-cluster"
    up = _cli("up", "--dir", str(state_dir))
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = state_dir / "kubeconfig"
        assert f"export KUBECONFIG={kubeconfig}" in up.stdout
        started = local_cluster.Cluster.load(state_dir)
        assert started is not None
        assert started.is_running()
        assert started.ready_seconds <= WARM_UP_BUDGET_SECONDS, (
            f"cluster up took {started.ready_seconds} s with cached binaries"
        )
        assert {component.name for component in started.processes} == set(
            local_cluster.COMPONENT_ORDER
        )

        # The printed kubeconfig works as-is with the packaged kubectl.
        nodes = subprocess.run(
            [str(k8s_toolchain.kubectl), "get", "nodes", "-o", "json"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert len(json.loads(nodes.stdout)["items"]) >= 2

        again = _cli("up", "--dir", str(state_dir))
        assert again.returncode == 0, again.stderr
        assert "Already running" in again.stdout
        reloaded = local_cluster.Cluster.load(state_dir)
        assert reloaded is not None
        assert [c.pid for c in reloaded.processes] == [c.pid for c in started.processes]

        status = _cli("status", "--dir", str(state_dir))
        assert status.returncode == 0, status.stdout
        assert local_cluster.pinned_kubernetes_version() in status.stdout
        assert "2/2 nodes Ready" in status.stdout
    finally:
        down = _cli("down", "--dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    for component in started.processes:
        assert not component.is_alive(), f"{component.name} (pid {component.pid}) still runs"
    assert "No cluster is running." in _cli("down", "--dir", str(state_dir)).stdout
