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

Canary rollouts: per component a stable Deployment (`<name>-api`, `<name>-processor`) and a
canary one (`<name>-api-canary`, `<name>-processor-canary`). A component's pod template, as
the spec defines it, has a revision (`template_revision`: a hash of the template before the
release is stamped on it); the pods carry it as the `version` label and `APP_VERSION`, and
their side as the `track` label and `ROLLOUT_TRACK`, which their metrics repeat. Each
Deployment selects its own track, so the two never select each other's pods; the Services and
the PDBs select the component's pods of both tracks. A stable Deployment records the template
it was built from (`TEMPLATE_ANNOTATION`), so that during a rollout, while the spec already
asks for the canary's template, the stable side can be applied again exactly as it runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_operator.rollout import spec as rollout_spec
from order_operator.v1alpha1 import spec as v1alpha1

API_PORT = 8000
METRICS_PORT = 9100
MANAGED_BY = "order-operator"

Component = rollout_spec.Component
Track = rollout_spec.Track
STABLE: Track = "stable"
CANARY: Track = "canary"
TRACK_LABEL = rollout_spec.TRACK_LABEL
VERSION_LABEL = rollout_spec.VERSION_LABEL
"""The pod template's revision, as a pod label (and as the `version` label of its metrics)."""
APP_VERSION_ENV = "APP_VERSION"
ROLLOUT_TRACK_ENV = "ROLLOUT_TRACK"
CONCURRENCY_ENV = "CONCURRENCY"
"""The processor's receive concurrency (its settings' `concurrency`)."""
TEMPLATE_ANNOTATION = f"{v1alpha1.GROUP}/template"
"""On a stable Deployment: the unstamped pod template it was built from, as canonical JSON."""
REVISION_LENGTH = 10

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


def deployment_name(owner: Owner, component: Component, track: Track = STABLE) -> str:
    base = api_name(owner) if component == "api" else processor_name(owner)
    return base if track == STABLE else f"{base}-{CANARY}"


COMPONENT_LABEL = "app.kubernetes.io/component"


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "order-pipeline",
        "app.kubernetes.io/instance": owner.name,
        COMPONENT_LABEL: component,
    }


def track_selector_labels(owner: Owner, component: str, track: Track) -> dict[str, str]:
    """What a track's Deployment selects. The stable one keeps the selector it was created
    with (selectors are immutable: pipelines from before canaries upgrade in place), which
    also matches the canary's pods; the canary's selects only its own. The two never fight
    over a pod: a ReplicaSet claims only pods of its own template hash, and a Deployment
    only ReplicaSets no other controller owns. What the overlap reaches is the stable
    side's scale selector: its HPA averages CPU over the canary's pods too, which take
    requests from the same Service."""
    base = selector_labels(owner, component)
    return base if track == STABLE else base | {TRACK_LABEL: track}


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


def _pod_template(
    owner: Owner, component: Component, pod: dict[str, Any], *, metrics_port: int
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": labels(owner, component),
            "annotations": scrape_annotations(metrics_port),
        },
        "spec": pod,
    }


def api_public_base_url(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> str:
    """What the API's status URLs start with: the spec's, else its Service's cluster address."""
    return spec.api.public_base_url or f"http://{api_name(owner)}.{owner.namespace}.svc"


def api_pod_template(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    """The API's pod template as the spec defines it, before a release is stamped on it."""
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
    return _pod_template(owner, "api", pod, metrics_port=API_PORT)


def processor_pod_template(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    """The processor's pod template as the spec defines it, before a release is stamped on it."""
    processor = spec.processor
    container = {
        "name": "processor",
        "image": processor.image,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "env": [
            *aws_env(spec),
            {"name": CONCURRENCY_ENV, "value": str(processor.concurrency)},
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
    return _pod_template(owner, "processor", pod, metrics_port=METRICS_PORT)


def pod_template(
    owner: Owner, spec: v1alpha1.OrderPipelineSpec, component: Component
) -> dict[str, Any]:
    if component == "api":
        return api_pod_template(owner, spec)
    return processor_pod_template(owner, spec)


def _canonical(template: Mapping[str, Any]) -> str:
    return json.dumps(template, sort_keys=True, separators=(",", ":"))


def template_revision(template: Mapping[str, Any]) -> str:
    """A short, stable name of an unstamped pod template (`pod_template`): equal templates,
    whatever their key order, have the same one; any change to the image, env, resources,
    probes or placement gives another. Replicas are no part of a template, and the release
    labels and variables are stamped after, from this very name."""
    digest = hashlib.sha256(_canonical(template).encode()).hexdigest()
    return digest[:REVISION_LENGTH]


def stamp(
    template: Mapping[str, Any], *, track: Track, concurrency: int | None = None
) -> dict[str, Any]:
    """The template with its release on it: the `track` and `version` labels, and in its
    workload container `APP_VERSION` and `ROLLOUT_TRACK` (the metrics' labels); `concurrency`
    replaces the processor's receive concurrency (a canary's share of the messages)."""
    revision = template_revision(template)
    stamped = copy.deepcopy(dict(template))
    metadata = stamped.setdefault("metadata", {})
    metadata["labels"] = {
        **metadata.get("labels", {}),
        TRACK_LABEL: track,
        VERSION_LABEL: revision,
    }
    container = stamped["spec"]["containers"][0]
    env = [e for e in container.get("env", []) if e["name"] not in _RELEASE_ENV]
    if concurrency is not None:
        env = [
            {"name": CONCURRENCY_ENV, "value": str(concurrency)}
            if e["name"] == CONCURRENCY_ENV
            else e
            for e in env
        ]
    container["env"] = [
        *env,
        {"name": APP_VERSION_ENV, "value": revision},
        {"name": ROLLOUT_TRACK_ENV, "value": track},
    ]
    return stamped


_RELEASE_ENV = (APP_VERSION_ENV, ROLLOUT_TRACK_ENV)

_STRATEGIES: dict[Component, dict[str, Any] | None] = {
    "api": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
    # None keeps Kubernetes' default rolling update.
    "processor": None,
}


def build_deployment(
    owner: Owner,
    component: Component,
    template: Mapping[str, Any],
    *,
    track: Track = STABLE,
    replicas: int | None = None,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """A Deployment of one track of a component, running the unstamped `template`.

    Stable: without `replicas` (its HPA or the operator's scaler owns the count), recording
    its template (`TEMPLATE_ANNOTATION`). The selector includes the track, so the stable and
    canary Deployments never select each other's pods.
    """
    spec: dict[str, Any] = {
        "selector": {"matchLabels": track_selector_labels(owner, component, track)}
    }
    if replicas is not None:
        spec["replicas"] = replicas
    strategy = _STRATEGIES[component]
    if strategy is not None:
        spec["strategy"] = strategy
    spec["template"] = stamp(template, track=track, concurrency=concurrency)
    metadata = _metadata(owner, deployment_name(owner, component, track), component)
    metadata["labels"] = metadata["labels"] | {TRACK_LABEL: track}
    if track == STABLE:
        metadata["annotations"] = {TEMPLATE_ANNOTATION: _canonical(template)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def build_api_deployment(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    """The stable API Deployment at the spec's template."""
    return build_deployment(owner, "api", api_pod_template(owner, spec))


def build_processor_deployment(owner: Owner, spec: v1alpha1.OrderPipelineSpec) -> dict[str, Any]:
    """The stable processor Deployment at the spec's template."""
    return build_deployment(owner, "processor", processor_pod_template(owner, spec))


def build_canary_deployment(
    owner: Owner,
    component: Component,
    template: Mapping[str, Any],
    *,
    replicas: int,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """The canary Deployment of a component: the canary revision's unstamped template (the
    spec's), the plan's replicas (the operator owns them: no HPA or scaler acts on the canary)
    and, for the processor, the plan's receive concurrency per pod."""
    if component == "api" and concurrency is not None:
        raise ValueError("only the processor has a receive concurrency")
    return build_deployment(
        owner, component, template, track=CANARY, replicas=replicas, concurrency=concurrency
    )


# Reading live Deployments back: what the wiring needs during a rollout.


def recorded_template(deployment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The unstamped template a stable Deployment was built from; None for one built before
    templates were recorded (or none at all)."""
    if not deployment:
        return None
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    recorded = annotations.get(TEMPLATE_ANNOTATION)
    if recorded is None:
        return None
    template: dict[str, Any] = json.loads(recorded)
    return template


def running_revision(deployment: Mapping[str, Any] | None) -> str | None:
    """The revision a Deployment's pods run (their `version` label): `machine.Inputs`'
    `stable_revision`. None without a Deployment, or for one from before revisions."""
    if not deployment:
        return None
    template_labels = deployment.get("spec", {}).get("template", {}).get("metadata", {})
    revision = (template_labels.get("labels") or {}).get(VERSION_LABEL)
    return revision if isinstance(revision, str) else None


def stable_template(
    desired: Mapping[str, Any],
    *,
    stable_revision: str,
    live: Mapping[str, Any] | None,
    promote: bool = False,
) -> dict[str, Any]:
    """The template to apply to the stable Deployment for a plan (`machine.Plan`).

    The spec's (`desired`) when the plan's stable revision is the spec's, or on promotion;
    otherwise a rollout runs and the stable side stays as it is: the template the live
    Deployment recorded. A live Deployment without a record (built by an operator from
    before rollouts) cannot be kept as it is, and gets the spec's: the machine never starts a
    rollout on such a Deployment anyway, as it reports no stable revision.
    """
    if promote or template_revision(desired) == stable_revision:
        return dict(desired)
    recorded = recorded_template(live)
    if recorded is not None and template_revision(recorded) == stable_revision:
        return recorded
    return dict(desired)


def build_stable_deployment(
    owner: Owner,
    spec: v1alpha1.OrderPipelineSpec,
    component: Component,
    *,
    stable_revision: str,
    live: Mapping[str, Any] | None,
    promote: bool = False,
) -> dict[str, Any]:
    """The stable Deployment a plan asks for (`machine.Plan.stable_revision`, `.promote`):
    at the spec's template, or, while a rollout runs, at the one it runs now (`live`)."""
    desired = pod_template(owner, spec, component)
    template = stable_template(desired, stable_revision=stable_revision, live=live, promote=promote)
    return build_deployment(owner, component, template)


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
    """One budget per component over both tracks: what an eviction may take is the
    component's capacity, wherever its pods run (the disruption controller sums the scales of
    both Deployments)."""
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
