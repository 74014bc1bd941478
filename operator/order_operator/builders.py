"""Manifests of an OrderPipeline's children, built by pure functions (unit-tested directly).

Every child carries its own `app.kubernetes.io/*` labels (never the parent's, so an Argo CD
tracking label on the OrderPipeline does not make Argo CD prune the children) and a controller
ownerReference to the OrderPipeline, so deleting the parent garbage-collects them. The processor
Deployment has no `replicas` (the operator's queue-depth scaler owns it) and neither has the
API Deployment (its HPA owns it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_operator.v1alpha1 import spec as v1alpha1

API_PORT = 8000
METRICS_PORT = 9100
MANAGED_BY = "order-operator"


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
    termination_grace_seconds: int,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if spec.aws.credentials.service_account_name:
        pod["serviceAccountName"] = spec.aws.credentials.service_account_name
    return pod


def _env_from(secret: v1alpha1.SecretReference | None) -> list[dict[str, Any]]:
    return [] if secret is None else [{"secretRef": {"name": secret.name}}]


def build_api_deployment(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    api = spec.api
    container = {
        "name": "api",
        "image": api.image,
        "ports": [{"name": "http", "containerPort": API_PORT}],
        "env": [
            *aws_env(spec),
            {"name": "API_HOST", "value": "0.0.0.0"},
            {"name": "API_PORT", "value": str(API_PORT)},
            *_extra_env(api.env),
        ],
        "envFrom": _env_from(api.secret_ref),
        "resources": api.resources.model_dump(),
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "securityContext": _container_security(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, api_name(owner), "api"),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner, "api")},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": {
                "metadata": {"labels": labels(owner, "api")},
                "spec": _pod_spec(spec, container=container, termination_grace_seconds=30),
            },
        },
    }


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
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, processor_name(owner), "processor"),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner, "processor")},
            "template": {
                "metadata": {"labels": labels(owner, "processor")},
                "spec": _pod_spec(spec, container=container, termination_grace_seconds=grace),
            },
        },
    }


def build_api_service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, api_name(owner), "api"),
        "spec": {
            "selector": selector_labels(owner, "api"),
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
