"""The operator as a real subprocess for e2e tests: its own ServiceAccount (bound to the shipped
ClusterRole, nothing more), the real local engines, liveness and metrics on free ports."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import engines, local

from .k8s_helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "operator/order_operator/crd/orderpipelines.yaml"
RBAC_FILE = REPO / "operator/order_operator/rbac/clusterrole.yaml"
GROUP, VERSION, PLURAL = "order-pipeline.dev", "v1alpha1", "orderpipelines"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class OperatorProcess:
    """`python -m order_operator` running as system:serviceaccount:<ns>:order-operator."""

    def __init__(
        self,
        kube_cluster: local_cluster.ClusterAccess,
        namespace: str,
        log_dir: Path,
        *,
        watch_namespaces: Sequence[str] = (),
    ) -> None:
        """`watch_namespaces`: the operator's `--namespace` arguments (none: all namespaces)."""
        self._cluster = kube_cluster
        self._namespace = namespace
        self._log_dir = log_dir
        self._watch_namespaces = list(watch_namespaces)
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self) -> None:
        kubeconfig = self._cluster.service_account_kubeconfig(
            self._namespace, "order-operator", self._log_dir / "operator.kubeconfig"
        )
        env = {**self._cluster.env(kubeconfig), **AWS_ENV}
        self.liveness_port, self.metrics_port = local.free_port(), local.free_port()
        self._starts += 1
        log = (self._log_dir / f"operator-{self._starts}.log").open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "order_operator",
                "--liveness-port",
                str(self.liveness_port),
                "--metrics-port",
                str(self.metrics_port),
                *(f"--namespace={watched}" for watched in self._watch_namespaces),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 30
        while not self.is_alive():
            if self._process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator did not become live; log: {self.log_tail()}")
            time.sleep(0.2)

    def is_alive(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything (a crash mid-reconcile)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        path = self._log_dir / f"operator-{self._starts}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def install_crd_and_rbac(kube_cluster: local_cluster.ClusterAccess) -> None:
    kube_cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=30s"
    )
    kube_cluster.kubectl("apply", "-f", str(RBAC_FILE))


@contextlib.contextmanager
def operator_running(
    kube_cluster: local_cluster.ClusterAccess, k8s_api: client.ApiClient, log_dir: Path
) -> Iterator[OperatorProcess]:
    install_crd_and_rbac(kube_cluster)
    core = client.CoreV1Api(k8s_api)
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    namespace = f"order-operator-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="order-operator"))
    )
    binding_name = f"order-operator-{namespace}"
    rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=binding_name),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="order-operator"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount", name="order-operator", namespace=namespace
                )
            ],
        )
    )
    operator = OperatorProcess(kube_cluster, namespace, log_dir)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        rbac.delete_cluster_role_binding(binding_name)
        core.delete_namespace(namespace)


def pipeline_manifest(
    name: str, running: engines.Engines, *, suffix: str, **overrides: Any
) -> dict[str, Any]:
    """A small OrderPipeline on the local engines with fast polling (tests only)."""
    spec: dict[str, Any] = {
        "aws": {
            "region": "us-east-1",
            "endpoints": {"sqs": running.sqs_endpoint, "dynamodb": running.dynamodb_endpoint},
        },
        "queue": {"name": f"orders-{suffix}", "maxReceiveCount": 4, "visibilityTimeoutSeconds": 20},
        "tables": {"prefix": f"t{suffix}-"},
        "api": {"image": "order-api:e2e", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
        "processor": {
            "image": "order-processor:e2e",
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": 20,
                "targetMessagesPerReplica": 100,
                "pollingIntervalSeconds": 1,
                "cooldownSeconds": 5,
            },
        },
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OrderPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(body: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    for entry in (body.get("status") or {}).get("conditions") or []:
        if entry.get("type") == condition_type:
            return dict(entry)
    return None


class Pipelines:
    """Create/read/patch/delete OrderPipelines as an admin user would (kubectl apply)."""

    def __init__(self, api: client.ApiClient, namespace: str, running: engines.Engines) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.engines = running

    def create(self, name: str, **overrides: Any) -> dict[str, Any]:
        suffix = uuid.uuid4().hex[:8]
        manifest = pipeline_manifest(name, self.engines, suffix=suffix, **overrides)
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest
        )
        return created

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def is_ready(self, name: str) -> bool:
        body = self.get(name)
        if body is None:
            return False
        ready = condition(body, "Ready")
        return (
            ready is not None
            and ready["status"] == "True"
            and body["status"].get("observedGeneration") == body["metadata"]["generation"]
        )

    def wait_ready(self, name: str, timeout: float = 90) -> dict[str, Any]:
        wait_for(lambda: self.is_ready(name), f"OrderPipeline {name} Ready", timeout=timeout)
        body = self.get(name)
        assert body is not None
        return body


def has_event(api: client.ApiClient, namespace: str, reason: str, text: str) -> bool:
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return any(event.reason == reason and text in (event.message or "") for event in events)
