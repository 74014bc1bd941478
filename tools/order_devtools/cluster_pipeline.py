"""One pipeline installed by the Helm chart on the local control plane's real node, from the
images `make images` built: what `make kube-demo` shows and the real-pod tests drive.

The engines listen on the node's bridge address, the one address both the pods and this host
reach; the pipeline's Secrets (AWS placeholders for the engines, the API's keys and one client)
are made here, so nothing usable is written into values files.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from order_api import security
from order_common import settings as common_settings
from order_devtools import cluster as local_cluster
from order_devtools import engines as local_engines
from order_devtools import images, provision
from order_operator.v1alpha1 import spec as v1alpha1

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts/order-pipeline"
GROUP, VERSION, PLURAL = v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL
PIPELINE = "orders"
CLIENT_ID = "shop"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
ON_THE_REAL_NODE: dict[str, Any] = {
    "nodeSelector": dict(local_cluster.REAL_NODE_LABELS),
    "tolerations": [{"key": local_cluster.REAL_NODE_TAINT["key"], "operator": "Exists"}],
}
"""Placement of every pod of the release: only the real node runs containers."""
_RESOURCES = {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}}


class ClusterPipelineError(RuntimeError):
    pass


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _secret(name: str, data: Mapping[str, str]) -> client.V1Secret:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)


@dataclass
class ClusterPipeline:
    """The release, its namespace and where its queue and tables are."""

    cluster: local_cluster.ClusterAccess
    engines: local_engines.Engines
    namespace: str
    release: str
    queue: str
    table_prefix: str
    client_secret: str

    @property
    def api_service(self) -> str:
        return f"{PIPELINE}-api"

    @property
    def orders_table(self) -> str:
        return f"{self.table_prefix}orders"

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.cluster.helm(*args, "--namespace", self.namespace, timeout=timeout)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        # The namespace first: anything after `--` goes to the container's command.
        return self.cluster.kubectl(
            "--namespace", self.namespace, *args, check=check, timeout=timeout
        )

    def api_url(self) -> str:
        """The API Service's cluster IP: kube-proxy routes this host's traffic to its pods."""
        core = client.CoreV1Api(self.cluster.api_client())
        spec = core.read_namespaced_service(self.api_service, self.namespace).spec
        if spec is None or not spec.cluster_ip:
            raise ClusterPipelineError(f"the Service {self.api_service} has no cluster IP")
        return f"http://{spec.cluster_ip}"

    def operator_log(self, lines: int = 30) -> str:
        result = self.kubectl(
            "logs", "--tail", str(lines), "--selector", "app.kubernetes.io/component=operator",
            check=False,
        )  # fmt: skip
        return result.stdout + result.stderr

    def aws_settings(self) -> common_settings.AwsSettings:
        return common_settings.AwsSettings(
            sqs_endpoint_url=self.engines.sqs_endpoint,
            dynamodb_endpoint_url=self.engines.dynamodb_endpoint,
            queue_name=self.queue,
            table_prefix=self.table_prefix,
        )

    def uninstall(self, timeout: float = 120) -> None:
        """Delete the pipeline (its finalizer removes queues and tables), then the release and
        the namespace."""
        api = self.cluster.api_client()
        custom = client.CustomObjectsApi(api)
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, PIPELINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _as_dict(
            custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        ).get("items"):
            time.sleep(1)
        self.helm("uninstall", self.release, "--wait", "--timeout", f"{int(timeout)}s")
        client.CoreV1Api(api).delete_namespace(self.namespace)


def chart_values(
    pipeline: ClusterPipeline,
    built: Mapping[str, images.BuiltImage],
    spec_overrides: Mapping[str, Any],
) -> dict[str, Any]:
    def image(component: str) -> dict[str, str]:
        return {"repository": built[component].repository, "tag": built[component].tag}

    endpoints = {
        "sqs": pipeline.engines.sqs_endpoint,
        "dynamodb": pipeline.engines.dynamodb_endpoint,
    }
    spec = {
        "aws": {
            "region": "us-east-1",
            "endpoints": endpoints,
            "credentials": {"source": "Secret", "secretRef": {"name": "aws"}},
        },
        "queue": {"name": pipeline.queue, "deletionPolicy": "Delete"},
        "tables": {"prefix": pipeline.table_prefix},
        "api": {
            "secretRef": {"name": "api-keys"},
            "resources": _RESOURCES,
            "placement": ON_THE_REAL_NODE,
        },
        "processor": {
            # Local engines, no card network: the simulated gateway (it says so at start).
            "env": {"PAYMENT_GATEWAY": "simulator"},
            "resources": _RESOURCES,
            "placement": ON_THE_REAL_NODE,
        },
    }
    return {
        "images": {"api": image("api"), "processor": image("processor")},
        "operator": {
            "image": {**image("operator"), "pullPolicy": "Never"},
            "watchNamespaces": [pipeline.namespace],
            **ON_THE_REAL_NODE,
        },
        "admissionPolicy": {
            "allowedImagePrefixes": [built["api"].repository.rsplit("/", 1)[0] + "/"],
            "allowedEndpoints": sorted(endpoints.values()),
        },
        "tests": {"timeoutSeconds": 120, **ON_THE_REAL_NODE},
        "pipelines": [
            {
                "name": PIPELINE,
                "generateApiSecret": False,
                "spec": _deep_merge(spec, spec_overrides),
            }
        ],
    }


def install(
    cluster: local_cluster.ClusterAccess,
    node: local_cluster.RealNode,
    engines: local_engines.Engines,
    work_dir: Path,
    *,
    spec_overrides: Mapping[str, Any] | None = None,
    timeout: float = 180,
) -> ClusterPipeline:
    """Build (or reuse) the images, load them into the node, install the chart with one
    pipeline in a fresh namespace enforcing `restricted`, wait until the pipeline is Ready and
    its pods serve, and seed the demo catalog."""
    built = images.ensure_images()
    node.import_images([image.archive for image in built.values()])
    suffix = uuid.uuid4().hex[:6]
    pipeline = ClusterPipeline(
        cluster=cluster,
        engines=engines,
        namespace=f"orders-{suffix}",
        release=f"orders-{suffix}",
        queue=f"orders-{suffix}",
        table_prefix=f"orders-{suffix}-",
        client_secret=secrets.token_urlsafe(24),
    )
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=pipeline.namespace, labels=RESTRICTED))
    )
    aws = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    api_keys = {
        "SIGNING_SECRET": secrets.token_urlsafe(48),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "API_CLIENTS": json.dumps({CLIENT_ID: security.hash_client_secret(pipeline.client_secret)}),
    }
    for name, data in (("aws", aws), ("api-keys", api_keys)):
        core.create_namespaced_secret(pipeline.namespace, _secret(name, data))
    values = work_dir / f"{pipeline.release}.values.yaml"
    values.write_text(yaml.safe_dump(chart_values(pipeline, built, spec_overrides or {})))
    pipeline.helm(
        "install", pipeline.release, str(CHART), "--values", str(values),
        "--wait", "--timeout", f"{int(timeout)}s",
        timeout=timeout + 30,
    )  # fmt: skip
    _wait_until_serving(pipeline, timeout)
    provision.seed_catalog(pipeline.aws_settings(), dynamodb=engines.dynamodb_client())
    return pipeline


def _as_dict(body: object) -> dict[str, Any]:
    """A custom object as the API returns it (the client types it as `object`)."""
    if not isinstance(body, dict):
        raise ClusterPipelineError(f"unexpected API answer: {body!r}")
    return body


def _serving(pod: dict[str, Any]) -> bool:
    """Whether a pod (`V1Pod.to_dict()`) runs, passes its readiness probe and is not stopping."""
    status = pod.get("status") or {}
    if pod["metadata"].get("deletion_timestamp") or status.get("phase") != "Running":
        return False
    conditions = status.get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _wait_until_serving(pipeline: ClusterPipeline, timeout: float) -> None:
    api = pipeline.cluster.api_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        body = _as_dict(
            custom.get_namespaced_custom_object(
                GROUP, VERSION, pipeline.namespace, PLURAL, PIPELINE
            )
        )
        conditions = (body.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        pods = [pod.to_dict() for pod in core.list_namespaced_pod(pipeline.namespace).items]
        serving = {
            component: any(
                _serving(pod)
                and (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
                == component
                for pod in pods
            )
            for component in ("api", "processor")
        }
        if ready and all(serving.values()):
            return
        if time.monotonic() > deadline:
            raise ClusterPipelineError(
                f"the pipeline did not serve within {timeout:.0f} s (Ready: {ready}, pods "
                f"serving: {serving}); operator log:\n{pipeline.operator_log()}"
            )
        time.sleep(1)
