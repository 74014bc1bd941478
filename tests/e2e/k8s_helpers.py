"""Small helpers shared by the e2e tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

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


def one_container_pod(
    name: str, *, container: str, image: str, security_context: client.V1SecurityContext
) -> client.V1Pod:
    """A bare pod for admission checks: what Pod Security judges is the security context."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(name=container, image=image, security_context=security_context)
            ]
        ),
    )


def privileged_pod_refusal(core: client.CoreV1Api, namespace: str) -> client.ApiException:
    """Create a privileged pod (container "app") in `namespace`: the error that refused it; the
    test fails if the pod is admitted."""
    pod = one_container_pod(
        "privileged",
        container="app",
        image="e2e-demo:1.0",
        security_context=client.V1SecurityContext(privileged=True),
    )
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(namespace, pod)
    return refused.value


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


@contextlib.contextmanager
def port_forward(
    kube_cluster: local_cluster.ClusterAccess, namespace: str, target: str, port: int
) -> Iterator[int]:
    """`kubectl port-forward` of `target` (e.g. `pod/web`) `port` to a free loopback port, which
    this yields, for the length of the block."""
    forward = subprocess.Popen(
        [str(kube_cluster.toolchain.kubectl), "port-forward", "--namespace", namespace, target,
         f":{port}", "--address", "127.0.0.1"],
        env=kube_cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        first_line = forward.stdout.readline()
        match = re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {port}", first_line)
        assert match, first_line
        yield int(match.group(1))
    finally:
        forward.terminate()
        forward.wait(timeout=10)
