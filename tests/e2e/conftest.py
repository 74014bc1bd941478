"""Fixtures for tests against a real Kubernetes control plane (order_devtools.cluster).

One cluster per test session (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok's fake nodes on 127.0.0.1), torn down at the end; a fresh namespace per test. A cold machine
builds the binaries first (see docs/cluster.md); that happens once, before the first test runs,
so it does not count against any single test's timeout.

When a collected test uses the `real_node` fixture, the session's cluster starts with a real node
beside the kwok nodes (docs/cluster.md); stopping it must leave the host exactly as it was
before, which the fixture checks (an error at teardown names every difference).

With ORDER_PIPELINE_KUBECONFIG naming a kubeconfig, the session uses that cluster instead of
starting one (kubectl and helm still come from the build); the tests marked
`local_control_plane`, which test the local control plane itself, are then deselected, and the
reason is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from order_devtools import cluster as local_cluster
from order_devtools import cluster_pipeline, engines, images
from order_devtools.observability import generate as observability_generate
from order_devtools.observability import pod_discovery, prometheus

from . import host_state
from .k8s_helpers import wait_for
from .operator_harness import OperatorProcess, Pipelines, operator_running

# Not KUBECONFIG: a shell often has that set (`make cluster-up` prints an export of it), and
# the suite must never move to a cluster nobody named for it.
EXISTING_CLUSTER_VARIABLE = "ORDER_PIPELINE_KUBECONFIG"
LOCAL_CONTROL_PLANE_MARKER = "local_control_plane"


def _existing_cluster_kubeconfig() -> Path | None:
    value = os.environ.get(EXISTING_CLUSTER_VARIABLE, "").strip()
    return Path(value).expanduser() if value else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With an existing cluster, drop the tests of the local control plane itself (its own
    processes, fake nodes and pinned version), saying so, rather than fail them all."""
    kubeconfig = _existing_cluster_kubeconfig()
    if kubeconfig is None:
        return
    deselected = [item for item in items if item.get_closest_marker(LOCAL_CONTROL_PLANE_MARKER)]
    if not deselected:
        return
    items[:] = [item for item in items if item not in deselected]
    config.hook.pytest_deselected(items=deselected)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"{EXISTING_CLUSTER_VARIABLE}={kubeconfig}: deselected {len(deselected)} test(s) "
            "of the local control plane itself (they need its own processes, kwok nodes and "
            "pinned version; unset the variable to run them):"
        )
        for item in deselected:
            reporter.write_line(f"  {item.nodeid}")


# Set by pytest_collection_finish: the built toolchain or why it could not be had, and whether
# a collected test needs the real node (then the one session cluster gets one).
_toolchain: local_cluster.Toolchain | None = None
_toolchain_error: str | None = None
_session_needs_real_node = False
REAL_NODE_FIXTURE = "real_node"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) binaries once, before any test runs: a cold build takes many
    minutes and must not be cut off by the per-test timeout. A failure is remembered and turned
    into a test failure by the fixtures, never a skip."""
    global _toolchain, _toolchain_error, _session_needs_real_node
    _session_needs_real_node = any(
        REAL_NODE_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items
    )
    if _toolchain is not None or _toolchain_error is not None:
        return
    if not any("k8s_toolchain" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    started = time.monotonic()
    try:
        _toolchain = local_cluster.ensure_toolchain(progress=progress)
    except local_cluster.ClusterError as error:
        _toolchain_error = str(error)
        progress(f"[k8s-build] FAILED: {error}")
    else:
        elapsed = time.monotonic() - started
        if elapsed > 5:
            progress(f"[k8s-build] control plane binaries ready after {elapsed:.0f} s")


def _require_toolchain() -> local_cluster.Toolchain:
    if _toolchain is None:
        try:
            return local_cluster.ensure_toolchain()
        except local_cluster.ClusterError as error:
            pytest.fail(f"the Kubernetes control plane binaries are missing: {error}")
    return _toolchain


@pytest.fixture(scope="session")
def k8s_toolchain() -> local_cluster.Toolchain:
    if _toolchain_error is not None:
        pytest.fail(f"the Kubernetes control plane binaries are missing: {_toolchain_error}")
    return _require_toolchain()


@pytest.fixture(scope="session")
def kube_cluster(
    tmp_path_factory: pytest.TempPathFactory, k8s_toolchain: local_cluster.Toolchain
) -> Iterator[local_cluster.ClusterAccess]:
    """A fresh control plane for this test session, stopped (exactly its own pids) at the end;
    or the cluster ORDER_PIPELINE_KUBECONFIG names, which is left running."""
    state_dir = tmp_path_factory.mktemp("kube-cluster")
    existing_kubeconfig = _existing_cluster_kubeconfig()
    if existing_kubeconfig is not None:
        existing = local_cluster.ExistingCluster(existing_kubeconfig, state_dir, k8s_toolchain)
        try:
            existing.check_reachable()
        except local_cluster.ClusterError as error:
            pytest.fail(f"{EXISTING_CLUSTER_VARIABLE} names an unusable cluster: {error}")
        yield existing
        return
    host_before = host_state.snapshot(state_dir) if _session_needs_real_node else None
    try:
        running = local_cluster.start_cluster(
            state_dir, toolchain=k8s_toolchain, real_node=_session_needs_real_node
        )
    except local_cluster.ClusterError as error:
        pytest.fail(f"the local Kubernetes control plane did not start: {error}")
    try:
        yield running
    finally:
        running.stop(remove_state=True)
        if host_before is not None:
            left = host_state.differences(host_before, host_state.snapshot(state_dir))
            if left:
                pytest.fail("stopping the real node left the host changed:\n" + "\n".join(left))


@pytest.fixture(scope="session")
def real_node(kube_cluster: local_cluster.ClusterAccess) -> local_cluster.RealNode:
    """The session cluster's real node (`real-node-0`: containerd, kubelet, kube-proxy), started
    with the cluster because a collected test asked for this fixture. Pods land there only with
    `nodeSelector: {type: real}` and a toleration of its taint; images come from
    `real_node.import_images([archive, ...])`, never from a registry."""
    node = getattr(kube_cluster, "real_node", None)
    if not isinstance(node, local_cluster.RealNode):
        pytest.fail(
            "the real node runs only in the local control plane this session starts "
            f"(unset {EXISTING_CLUSTER_VARIABLE})"
        )
    return node


def _required_binary(toolchain: local_cluster.Toolchain, name: str) -> Path:
    try:
        return toolchain.binary(name)
    except local_cluster.ClusterError as error:
        pytest.fail(f"{name} is missing: {error}")


@pytest.fixture(scope="session")
def kubectl_path(k8s_toolchain: local_cluster.Toolchain) -> Path:
    return _required_binary(k8s_toolchain, "kubectl")


@pytest.fixture(scope="session")
def helm_path(k8s_toolchain: local_cluster.Toolchain) -> Path:
    return _required_binary(k8s_toolchain, "helm")


@pytest.fixture(scope="session")
def k8s_api(kube_cluster: local_cluster.ClusterAccessAccess) -> client.ApiClient:
    """An admin `kubernetes` client for the session cluster."""
    return kube_cluster.api_client()


NamespaceFactory = Callable[..., str]


@pytest.fixture
def make_namespace(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    request: pytest.FixtureRequest,
) -> Iterator[NamespaceFactory]:
    """Create fresh, uniquely named namespaces (optionally labelled); deleted after the test.

    Returns once the namespace's `default` ServiceAccount exists, since pods cannot be created
    before the controller-manager has made it.
    """
    core = client.CoreV1Api(k8s_api)
    created: list[str] = []
    test_name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30]

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"{test_name}-{uuid.uuid4().hex[:6]}".strip("-")
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        created.append(name)
        wait_for(
            lambda: bool(core.list_namespaced_service_account(name).items),
            f"the default ServiceAccount in {name}",
        )
        return name

    yield make
    for name in created:
        try:
            core.delete_namespace(name)
        except client.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(make_namespace: NamespaceFactory) -> str:
    """One fresh namespace for this test."""
    return make_namespace()


ServiceAccountRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_as_service_account(kube_cluster: local_cluster.ClusterAccess) -> ServiceAccountRunner:
    """`run_as_service_account(namespace, name, argv)` runs argv with a KUBECONFIG holding a
    TokenRequest token of that ServiceAccount (and kubectl/helm first on PATH)."""

    def run(
        namespace: str, name: str, argv: list[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        return kube_cluster.run_as_service_account(namespace, name, argv, **kwargs)

    return run


@pytest.fixture
def service_account_api(
    kube_cluster: local_cluster.ClusterAccess, tmp_path: Path
) -> Callable[[str, str], client.ApiClient]:
    """`service_account_api(namespace, name)`: a `kubernetes` client authenticated as that
    ServiceAccount."""

    def make(namespace: str, name: str) -> client.ApiClient:
        kubeconfig = kube_cluster.service_account_kubeconfig(
            namespace, name, tmp_path / f"{namespace}.{name}.kubeconfig"
        )
        return config.new_client_from_config(config_file=str(kubeconfig))

    return make


@pytest.fixture(scope="module")
def local_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engines.Engines]:
    """Both engines on loopback, in memory, for one test module (the operator's queues and
    tables)."""
    engines.ensure_installed()
    with engines.running_engines(tmp_path_factory.mktemp("engines"), persistent=False) as running:
        yield running


@dataclass(frozen=True)
class ClusterPrometheus:
    """A real Prometheus scraping the annotated pods of the real node every second."""

    server: prometheus.Prometheus
    host_url: str
    """Where this host's tests query it."""
    pod_url: str
    """Where pods (the in-cluster operator) query it: the node's bridge address."""


@pytest.fixture(scope="module")
def cluster_prometheus(
    kube_cluster: local_cluster.ClusterAccess,
    real_node: local_cluster.RealNode,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterPrometheus]:
    """Prometheus with the pipeline's rules and the `kubernetes-pods` job (pods on the real
    node, found through the admin kubeconfig), listening on the node's bridge address: the one
    address both pods and this host reach, and not a public one. One per test module, so no
    series outlives the module that made it."""
    pods = pod_discovery.PodDiscovery(kubeconfig=kube_cluster.kubeconfig, node_name=real_node.name)
    with prometheus.running(
        tmp_path_factory.mktemp("cluster-prometheus"),
        rule_files=[observability_generate.RULES_FILE],
        pods=pods,
        host=real_node.address,
    ) as server:
        yield ClusterPrometheus(server=server, host_url=server.url, pod_url=server.url)


@pytest.fixture(scope="module")
def pod_engines(
    real_node: local_cluster.RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[engines.Engines]:
    """The engines on the node's bridge address: the one address both pods and this host
    reach. One per module, so no queue or table outlives the module that made it."""
    state = tmp_path_factory.mktemp("pod-engines")
    with engines.running_engines(state, persistent=False, host=real_node.address) as running:
        yield running


@contextlib.contextmanager
def installed_pipeline(
    kube_cluster: local_cluster.ClusterAccess,
    real_node: local_cluster.RealNode,
    pod_engines: engines.Engines,
    work_dir: Path,
    *,
    spec_overrides: dict[str, Any] | None = None,
) -> Iterator[cluster_pipeline.ClusterPipeline]:
    """The chart and one pipeline on the real node (`cluster_pipeline.install`), uninstalled
    on exit; a failed install fails the test with what went wrong."""
    try:
        installed = cluster_pipeline.install(
            kube_cluster, real_node, pod_engines, work_dir, spec_overrides=spec_overrides
        )
    except (images.ImageBuildError, cluster_pipeline.ClusterPipelineError) as error:
        pytest.fail(f"the pipeline could not be installed on the real node: {error}")
    try:
        yield installed
    finally:
        installed.uninstall()


@pytest.fixture(scope="module")
def order_operator(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as a subprocess with its own ServiceAccount, one per module."""
    with operator_running(kube_cluster, k8s_api, tmp_path_factory.mktemp("operator")) as running:
        yield running


@pytest.fixture
def pipelines(
    order_operator: OperatorProcess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    make_namespace: Callable[..., str],
) -> Pipelines:
    """OrderPipelines in a fresh namespace, handled by the module's operator."""
    return Pipelines(k8s_api, make_namespace(), local_engines)
