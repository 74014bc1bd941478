"""Manifests of an OrderPipeline's children, built by pure functions (unit-tested directly).

Every child carries its own `app.kubernetes.io/*` labels (never the parent's, so an Argo CD
tracking label on the OrderPipeline does not make Argo CD prune the children) and a controller
ownerReference to the OrderPipeline, so deleting the parent garbage-collects them. The processor
Deployment has no `replicas` (the operator's queue-depth scaler owns it) and neither has the
API Deployment (its HPA owns it).

With `spec.development.reload` the two workloads run from a writable copy of their sources (an
emptyDir over `SOURCE_DIR`, filled by an init container from the image) and restart on a change
there: that is where `skaffold dev` syncs Python files (skaffold.yaml's `dev` profile), while the
root filesystem stays read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_operator.v1alpha1 import spec as v1alpha1

API_PORT = 8000
METRICS_PORT = 9100
MANAGED_BY = "order-operator"

SOURCE_DIR = "/app"
"""Where the images keep the Python packages (`PYTHONPATH`, see services/*.Dockerfile)."""
SOURCES_VOLUME = "sources"
SOURCES_COPY_DIR = "/sources"
"""Where the init container mounts the emptyDir that the workload mounts at `SOURCE_DIR`."""

# Entry by entry, because the emptyDir's own directory belongs to root: copying its mode and times
# (what copytree does for the top directory) would fail. copy2 keeps the files' times, so the
# image's compiled bytecode stays valid; dirs_exist_ok makes a re-run of the init container safe.
# The chart runs the same script for the operator: `make generate` writes it to the chart
# (order_operator/generate.py), so this constant is its one source.
COPY_SOURCES_SCRIPT = """\
import os
import shutil
import sys

source, target = sys.argv[1:]
for name in os.listdir(source):
    origin, copy = os.path.join(source, name), os.path.join(target, name)
    if os.path.isdir(origin):
        shutil.copytree(origin, copy, dirs_exist_ok=True)
    else:
        shutil.copy2(origin, copy)
"""

API_RELOAD_COMMAND = (
    "python",
    "-m",
    "uvicorn",
    "order_api.app:create_served_app",
    "--factory",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--timeout-graceful-shutdown",
    "10",
    "--reload",
    "--reload-dir",
    ".",
)
"""`python -m order_api`'s server as uvicorn's CLI with `--reload` (one worker): host and port
come from `UVICORN_HOST` / `UVICORN_PORT`, the sources from the working directory."""


@dataclass(frozen=True)
class Owner:
    """Identity of the OrderPipeline that owns the children."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
            "kind": v1alpha1.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def api_name(owner: Owner) -> str:
    return f"{owner.name}-api"


def processor_name(owner: Owner) -> str:
    return f"{owner.name}-processor"


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "order-pipeline",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
    }


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        **selector_labels(owner, component),
        "app.kubernetes.io/part-of": "order-pipeline",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference()],
    }


def aws_env(spec: v1alpha1.OrderPipelineSpec) -> list[dict[str, Any]]:
    """The variables both services read to find their queue and tables."""
    env: list[dict[str, Any]] = [
        {"name": "AWS_REGION", "value": spec.aws.region},
        {"name": "QUEUE_NAME", "value": spec.queue.name},
        {"name": "TABLE_PREFIX", "value": spec.tables.prefix},
    ]
    if spec.aws.endpoints.sqs:
        env.append({"name": "SQS_ENDPOINT_URL", "value": spec.aws.endpoints.sqs})
    if spec.aws.endpoints.dynamodb:
        env.append({"name": "DYNAMODB_ENDPOINT_URL", "value": spec.aws.endpoints.dynamodb})
    credentials = spec.aws.credentials
    if credentials.source == "Secret" and credentials.secret_ref is not None:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(
                {
                    "name": key,
                    "valueFrom": {
                        "secretKeyRef": {"name": credentials.secret_ref.name, "key": key}
                    },
                }
            )
    return env


def _extra_env(extra: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in sorted(extra.items())]


def _container_security() -> dict[str, Any]:
    # Passes the `restricted` Pod Security Standard.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_spec(
    spec: v1alpha1.OrderPipelineSpec,
    *,
    container: dict[str, Any],
    placement: v1alpha1.Placement,
    termination_grace_seconds: int,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        # Neither workload calls the Kubernetes API, so its pods carry no token to steal. Cloud
        # identity still works: IRSA and EKS Pod Identity project their own token.
        "automountServiceAccountToken": False,
    }
    if spec.aws.credentials.service_account_name:
        pod["serviceAccountName"] = spec.aws.credentials.service_account_name
    if placement.node_selector:
        pod["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod["tolerations"] = [
            toleration.model_dump(by_alias=True, exclude_none=True)
            for toleration in placement.tolerations
        ]
    return pod


def processor_reload_command(*, stop_timeout_seconds: int) -> list[str]:
    """`python -m order_processor` under the watchfiles CLI (a dependency of uvicorn[standard],
    so already in the image): restarted when a Python file below the working directory changes.
    watchfiles stops it with SIGINT, which the processor handles like SIGTERM (in-flight messages
    finish or are released), and kills it after `stop_timeout_seconds`."""
    return [
        "python",
        "-m",
        "watchfiles",
        "--filter",
        "python",
        "--target-type",
        "command",
        "--sigint-timeout",
        str(stop_timeout_seconds),
        "python -m order_processor",
        ".",
    ]


def _with_source_reload(pod: dict[str, Any], *, command: list[str]) -> dict[str, Any]:
    """The dev-mode pod: an init container (same image, same restricted securityContext) copies
    the image's `SOURCE_DIR` into an emptyDir, the workload mounts it over `SOURCE_DIR`, works
    there and runs `command`, which reloads on change. No liveness probe: the reloader keeps the
    container up while a synced change does not import, and the next sync fixes it."""
    (container,) = pod["containers"]
    copy_sources = {
        "name": "copy-sources",
        "image": container["image"],
        "command": ["python", "-c", COPY_SOURCES_SCRIPT, SOURCE_DIR, SOURCES_COPY_DIR],
        "resources": container["resources"],
        "securityContext": _container_security(),
        "volumeMounts": [{"name": SOURCES_VOLUME, "mountPath": SOURCES_COPY_DIR}],
    }
    workload = {key: value for key, value in container.items() if key != "livenessProbe"} | {
        "command": command,
        "workingDir": SOURCE_DIR,
        "volumeMounts": [{"name": SOURCES_VOLUME, "mountPath": SOURCE_DIR}],
    }
    return pod | {
        "initContainers": [copy_sources],
        "containers": [workload],
        "volumes": [{"name": SOURCES_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}}],
    }


def _env_from(secret: v1alpha1.SecretReference | None) -> list[dict[str, Any]]:
    return [] if secret is None else [{"secretRef": {"name": secret.name}}]


def scrape_annotations(port: int) -> dict[str, str]:
    """The `prometheus.io/*` pod annotations that annotation-based Prometheus setups (the
    common `kubernetes-pods` scrape job) follow to a pod's metrics."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def _deployment(
    owner: Owner,
    name: str,
    component: str,
    pod: dict[str, Any],
    *,
    metrics_port: int,
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Deployment of one component's pods, without `replicas` (its HPA or the operator's
    scaler owns the count); `strategy` None keeps Kubernetes' default rolling update."""
    spec: dict[str, Any] = {"selector": {"matchLabels": selector_labels(owner, component)}}
    if strategy is not None:
        spec["strategy"] = strategy
    spec["template"] = {
        "metadata": {
            "labels": labels(owner, component),
            "annotations": scrape_annotations(metrics_port),
        },
        "spec": pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, component),
        "spec": spec,
    }


def api_public_base_url(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> str:
    """What the API's status URLs start with: the spec's, else its Service's cluster address."""
    return spec.api.public_base_url or f"http://{api_name(owner)}.{owner.namespace}.svc"


def build_api_deployment(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    api = spec.api
    reload = spec.development.reload
    uvicorn_env = [
        {"name": "UVICORN_HOST", "value": "0.0.0.0"},
        {"name": "UVICORN_PORT", "value": str(API_PORT)},
    ]
    container = {
        "name": "api",
        "image": api.image,
        "ports": [{"name": "http", "containerPort": API_PORT}],
        "env": [
            *aws_env(spec),
            {"name": "API_HOST", "value": "0.0.0.0"},
            {"name": "API_PORT", "value": str(API_PORT)},
            {"name": "PUBLIC_BASE_URL", "value": api_public_base_url(owner, spec)},
            *(uvicorn_env if reload else []),
            *_extra_env(api.env),
        ],
        "envFrom": _env_from(api.secret_ref),
        "resources": api.resources.model_dump(),
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "securityContext": _container_security(),
    }
    pod = _pod_spec(
        spec, container=container, placement=api.placement, termination_grace_seconds=30
    )
    if reload:
        pod = _with_source_reload(pod, command=list(API_RELOAD_COMMAND))
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
    return _deployment(owner, api_name(owner), "api", pod, metrics_port=API_PORT, strategy=strategy)


def build_processor_deployment(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    processor = spec.processor
    container = {
        "name": "processor",
        "image": processor.image,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "env": [
            *aws_env(spec),
            {"name": "CONCURRENCY", "value": str(processor.concurrency)},
            {"name": "BATCH_SIZE", "value": str(processor.batch_size)},
            # The kubelet's probes and Prometheus reach the pod on its IP, not loopback.
            {"name": "METRICS_HOST", "value": "0.0.0.0"},
            {"name": "METRICS_PORT", "value": str(METRICS_PORT)},
            *_extra_env(processor.env),
        ],
        "envFrom": _env_from(processor.secret_ref),
        "resources": processor.resources.model_dump(),
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
        "securityContext": _container_security(),
    }
    # Scale-in must not cut off work in flight: give a stopping consumer at least the
    # visibility timeout to finish or release its messages.
    grace = max(30, spec.queue.visibility_timeout_seconds + 10)
    pod = _pod_spec(
        spec, container=container, placement=processor.placement, termination_grace_seconds=grace
    )
    if spec.development.reload:
        pod = _with_source_reload(
            pod, command=processor_reload_command(stop_timeout_seconds=grace - 5)
        )
    return _deployment(owner, processor_name(owner), "processor", pod, metrics_port=METRICS_PORT)


NO_POD_SELECTOR = {f"{v1alpha1.GROUP}/serving": "stopped"}
"""Added to the API Service's selector while a pipeline is being deleted: no pod carries it, so
the Service has no endpoints (removing the selector instead would leave the old ones)."""


def build_api_service(owner: Owner, *, serving: bool = True) -> dict[str, Any]:
    selector = selector_labels(owner, "api") | ({} if serving else NO_POD_SELECTOR)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, api_name(owner), "api"),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_processor_service(owner: Owner) -> dict[str, Any]:
    """Headless: only Prometheus scrapes the processors, each pod on its own."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, f"{processor_name(owner)}-metrics", "processor"),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(owner, "processor"),
            "ports": [
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_api_hpa(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    autoscaling = spec.api.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, api_name(owner), "api"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": api_name(owner),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds
                }
            },
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_pdb(owner: Owner, component: str, budget: v1alpha1.DisruptionBudget) -> dict[str, Any]:
    name = api_name(owner) if component == "api" else processor_name(owner)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, name, component),
        "spec": {
            "maxUnavailable": budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(owner, component)},
        },
    }


def build_children(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> list[dict[str, Any]]:
    """Everything the operator applies for one OrderPipeline, in apply order."""
    return [
        build_api_deployment(owner, spec),
        build_processor_deployment(owner, spec),
        build_api_service(owner),
        build_processor_service(owner),
        build_api_hpa(owner, spec),
        build_pdb(owner, "api", spec.api.disruption_budget),
        build_pdb(owner, "processor", spec.processor.disruption_budget),
    ]
