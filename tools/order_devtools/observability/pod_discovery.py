"""Kubernetes pod discovery for Debian's Prometheus, which is built without `kubernetes_sd_configs`
(Debian removed it for client-go's dependencies): the pods an API server lists, turned into
`file_sd` target groups that carry exactly the `__meta_kubernetes_*` labels Prometheus' own
`role: pod` discovery gives, so the scrape job's relabelling (the common `kubernetes-pods` one)
is the real thing and would work unchanged against `kubernetes_sd_configs`.

`target_groups` is the pure translation (one group per pod with an IP: a target per declared
container port, or the bare pod IP for a container that declares none); `discovering` lists the
pods every second through the given kubeconfig and rewrites the file when they change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

_POD = "__meta_kubernetes_pod_"
NAMESPACE_LABEL = "__meta_kubernetes_namespace"


@dataclass(frozen=True)
class PodDiscovery:
    """Which pods to discover, and through which API server."""

    kubeconfig: Path
    """The API server's address and credentials (what `kubeconfig_file` would name)."""
    namespaces: Sequence[str] = ()
    """Only these namespaces; empty: all of them."""
    node_name: str | None = None
    """Only pods on this node: on the local cluster the real node, since kwok's pods have IPs
    nothing answers on."""
    interval_seconds: float = 1.0


def sanitize(name: str) -> str:
    """A Kubernetes label or annotation name as Prometheus spells it in a meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    metadata, status = pod["metadata"], pod.get("status") or {}
    labels = {
        NAMESPACE_LABEL: metadata["namespace"],
        f"{_POD}name": metadata["name"],
        f"{_POD}ip": status.get("podIP", ""),
        f"{_POD}ready": _ready(status),
        f"{_POD}phase": status.get("phase", ""),
        f"{_POD}node_name": (pod.get("spec") or {}).get("nodeName", ""),
        f"{_POD}host_ip": status.get("hostIP", ""),
        f"{_POD}uid": metadata.get("uid", ""),
    }
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{_POD}controller_kind"] = owner["kind"]
            labels[f"{_POD}controller_name"] = owner["name"]
    for kind, values in (
        ("label", metadata.get("labels")),
        ("annotation", metadata.get("annotations")),
    ):
        for key, value in (values or {}).items():
            labels[f"{_POD}{kind}_{sanitize(key)}"] = value
            labels[f"{_POD}{kind}present_{sanitize(key)}"] = "true"
    return labels


def _ready(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status", "unknown")).lower()
    return "unknown"


def _container_targets(pod: Mapping[str, Any]) -> list[dict[str, str]]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    pod_ip: str = status["podIP"]
    ids = {
        s["name"]: s.get("containerID", "")
        for key in ("containerStatuses", "initContainerStatuses")
        for s in status.get(key) or []
    }
    targets = []
    for key, init in (("containers", "false"), ("initContainers", "true")):
        for container in spec.get(key) or []:
            common = {
                f"{_POD}container_name": container["name"],
                f"{_POD}container_id": ids.get(container["name"], ""),
                f"{_POD}container_image": container.get("image", ""),
                f"{_POD}container_init": init,
            }
            ports = container.get("ports") or []
            if not ports:
                targets.append({"__address__": pod_ip, **common})
            for port in ports:
                targets.append(
                    {
                        "__address__": f"{pod_ip}:{port['containerPort']}",
                        **common,
                        f"{_POD}container_port_name": port.get("name", ""),
                        f"{_POD}container_port_number": str(port["containerPort"]),
                        f"{_POD}container_port_protocol": port.get("protocol", "TCP"),
                    }
                )
    return targets


def target_groups(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`file_sd` groups for `pods` (API objects as JSON), one `{"targets", "labels"}` entry per
    target: file_sd has no per-target labels, so each target is a group of its own."""
    groups = []
    for pod in pods:
        if not (pod.get("status") or {}).get("podIP"):
            continue
        labels = _pod_labels(pod)
        for target in _container_targets(pod):
            address = target.pop("__address__")
            groups.append({"targets": [address], "labels": {**labels, **target}})
    return sorted(groups, key=lambda group: json.dumps(group, sort_keys=True))


def list_pods(api: client.ApiClient, discovery: PodDiscovery) -> list[dict[str, Any]]:
    """The pods as the API returns them (JSON field names, as `target_groups` reads them)."""
    core = client.CoreV1Api(api)
    selector = f"spec.nodeName={discovery.node_name}" if discovery.node_name else ""
    # Unparsed: the raw JSON keeps the API's field names, which is what the labels follow.
    responses: list[Any] = (
        [
            core.list_namespaced_pod(ns, field_selector=selector, _preload_content=False)
            for ns in discovery.namespaces
        ]
        if discovery.namespaces
        else [core.list_pod_for_all_namespaces(field_selector=selector, _preload_content=False)]
    )
    pods: list[dict[str, Any]] = []
    for response in responses:
        pods.extend(json.loads(response.data)["items"])
    return pods


def write_atomically(path: Path, groups: list[dict[str, Any]]) -> None:
    """Replace the file in one rename, so Prometheus never reads half of it."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(groups, indent=1))
    os.replace(temporary, path)


@dataclass
class Discoverer:
    """What the discovery loop saw last; `error` says why the last listing failed, if it did."""

    file: Path
    groups: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@contextlib.contextmanager
def discovering(discovery: PodDiscovery, file: Path) -> Iterator[Discoverer]:
    """Write `file` now (an unusable kubeconfig fails here, not silently later), then keep it
    current from a background thread until exit."""
    api = config.new_client_from_config(config_file=str(discovery.kubeconfig))  # type: ignore[no-untyped-call]
    state = Discoverer(file)
    state.groups = target_groups(list_pods(api, discovery))
    write_atomically(file, state.groups)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(discovery.interval_seconds):
            try:
                groups = target_groups(list_pods(api, discovery))
            except Exception as error:  # the API server may be restarting: keep the last list
                state.error = str(error)
                continue
            state.error = None
            if groups != state.groups:
                write_atomically(file, groups)
                state.groups = groups

    thread = threading.Thread(target=loop, name="prometheus-pod-discovery", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(timeout=30)
        api.close()
