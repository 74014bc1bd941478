"""Kubernetes API calls the operator makes besides kopf's own: server-side apply of children,
the workloads' scale, status writes, counting a pipeline's pods (deletion), and reading the
Secret that holds AWS credentials.

Children are applied under one field manager (`order-operator`); the processor's replica count
is written through the scale subresource under another (`order-operator-scaler`), so the apply
never claims `spec.replicas` and the two never conflict.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config

from order_operator.v1alpha1 import spec as v1alpha1

FIELD_MANAGER = "order-operator"
SCALER_FIELD_MANAGER = "order-operator-scaler"
_APPLY = "application/apply-patch+yaml"
_MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class DeploymentState:
    exists: bool
    spec_replicas: int
    ready_replicas: int
    updated_replicas: int
    observed_current: bool
    """The Deployment controller has seen the latest template (rollout observed)."""


def api_client() -> client.ApiClient:
    """In a pod, its ServiceAccount; elsewhere $KUBECONFIG."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _patcher(self, kind: str) -> Callable[..., Any]:
        patchers: Mapping[str, Callable[..., Any]] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
        }
        return patchers[kind]

    def apply(self, manifest: Mapping[str, Any]) -> None:
        """Server-side apply; `force` takes over fields another manager wrote (drift)."""
        metadata = manifest["metadata"]
        self._patcher(str(manifest["kind"]))(
            metadata["name"],
            metadata["namespace"],
            dict(manifest),
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=_APPLY,
        )

    def deployment_state(self, namespace: str, name: str) -> DeploymentState:
        try:
            deployment = self.apps.read_namespaced_deployment(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return DeploymentState(False, 0, 0, 0, False)
            raise
        status = deployment.status or client.V1DeploymentStatus()
        generation = (deployment.metadata.generation if deployment.metadata else None) or 0
        return DeploymentState(
            exists=True,
            spec_replicas=(deployment.spec.replicas if deployment.spec else None) or 0,
            ready_replicas=status.ready_replicas or 0,
            updated_replicas=status.updated_replicas or 0,
            observed_current=(status.observed_generation or 0) >= generation,
        )

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment as the API serves it (camelCase), None when there is none."""
        try:
            # Not deserialized: the manifests' camelCase, not the client's models.
            response: Any = self.apps.read_namespaced_deployment(
                name, namespace, _preload_content=False
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(response.data)
        return found

    def count_pods(self, namespace: str, selector: Mapping[str, str]) -> int:
        """Pods matching the labels, terminating ones included."""
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        return len(self.core.list_namespaced_pod(namespace, label_selector=label_selector).items)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            field_manager=SCALER_FIELD_MANAGER,
            _content_type=_MERGE,
        )

    def stop_deployment(self, namespace: str, name: str) -> None:
        """Scale to zero; a Deployment that is gone is stopped already."""
        try:
            self.scale_deployment(namespace, name, 0)
        except client.ApiException as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            v1alpha1.GROUP,
            v1alpha1.VERSION,
            namespace,
            v1alpha1.PLURAL,
            name,
            {"status": dict(status)},
            field_manager=FIELD_MANAGER,
            _content_type=_MERGE,
        )

    def read_pipeline(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body = self.custom.get_namespaced_custom_object(
                v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], body)

    def read_secret_keys(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(name, namespace)
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
