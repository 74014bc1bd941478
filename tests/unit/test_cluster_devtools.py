"""Unit tests of order_devtools.cluster that need no Kubernetes binaries."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from order_devtools import cluster as local_cluster
from order_devtools.cluster import component_process, components, toolchain


def test_kubeconfig_text_embeds_the_ca_and_token() -> None:
    text = local_cluster.kubeconfig_text(
        "https://127.0.0.1:6443", b"PEM", "system:serviceaccount:ns:robot", "secret", "ns"
    )
    kubeconfig = yaml.safe_load(text)
    (cluster_entry,) = kubeconfig["clusters"]
    assert cluster_entry["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster_entry["cluster"]["certificate-authority-data"]) == b"PEM"
    assert kubeconfig["users"][0]["user"] == {"token": "secret"}
    assert kubeconfig["contexts"][0]["context"]["namespace"] == "ns"
    assert kubeconfig["current-context"] == kubeconfig["contexts"][0]["name"]


def test_pinned_version_is_a_1_34_release_and_names_the_cache_directory() -> None:
    pinned = local_cluster.pinned_kubernetes_version()
    assert pinned.startswith("v1.34.")
    cache_dir = subprocess.run(
        ["bash", str(local_cluster.BUILD_SCRIPT), "--print-dir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(cache_dir).name.startswith(f"{pinned}-etcd3.6.")
    assert str(local_cluster.REPO_ROOT) not in cache_dir  # binaries stay out of the repo


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_stop_never_signals_a_pid_whose_start_time_differs(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    ticks = component_process.process_start_ticks(sleeper.pid)
    assert ticks is not None
    # What `down` would see if the recorded pid had been reused by an unrelated process.
    impostor = local_cluster.ComponentProcess("etcd", sleeper.pid, ticks + 1, str(tmp_path / "x"))
    assert not impostor.is_alive()
    impostor.stop(grace_seconds=0.2)
    assert sleeper.poll() is None

    genuine = local_cluster.ComponentProcess("etcd", sleeper.pid, ticks, str(tmp_path / "x"))
    assert genuine.is_alive()
    genuine.stop(grace_seconds=5)
    deadline = time.monotonic() + 5
    while sleeper.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeper.returncode is not None


def test_state_round_trips_so_down_finds_what_up_started(tmp_path: Path) -> None:
    saved = local_cluster.Cluster(
        state_dir=tmp_path,
        toolchain=local_cluster.Toolchain(tmp_path / "toolchain"),
        ports={"apiserver": 1234, "etcd": 2345},
        admin_token="token",
        processes=[local_cluster.ComponentProcess("etcd", 42, 7, str(tmp_path / "etcd.log"))],
        started_at=1.5,
        ready_seconds=9.5,
    )
    saved.save()
    loaded = local_cluster.Cluster.load(tmp_path)
    assert loaded is not None
    assert loaded.server == "https://127.0.0.1:1234"
    assert loaded.processes == saved.processes
    assert (loaded.admin_token, loaded.ready_seconds) == ("token", 9.5)
    assert (tmp_path / local_cluster.STATE_FILE_NAME).stat().st_mode & 0o077 == 0


def test_down_without_a_cluster_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert local_cluster.main(["down", "--dir", str(tmp_path / "none")]) == 0
    assert "No cluster is running." in capsys.readouterr().out


def test_node_readiness_needs_the_ready_condition_and_no_not_ready_taint() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert components.node_is_ready(ready)
    tainted = {**ready, "spec": {"taints": [{"key": "node.kubernetes.io/not-ready"}]}}
    assert not components.node_is_ready(tainted)
    assert not components.node_is_ready({"status": {"conditions": []}})


def test_a_failing_build_is_an_error_that_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "build.sh"
    script.write_text("echo \"[k8s-build] ERROR: 'go' is not on PATH\" >&2; exit 1\n")
    monkeypatch.setattr(toolchain, "BUILD_SCRIPT", script)
    lines: list[str] = []
    with pytest.raises(local_cluster.ClusterError, match="'go' is not on PATH"):
        local_cluster.ensure_toolchain(progress=lines.append)
    assert lines == ["[k8s-build] ERROR: 'go' is not on PATH"]


def test_a_mistyped_dir_is_never_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert local_cluster.main(["up", "--dir", str(tmp_path)]) == 1
    assert local_cluster.main(["down", "--dir", str(tmp_path)]) == 1
    assert precious.read_text() == "keep me"
    assert "holds no cluster state; not deleting it" in capsys.readouterr().err
