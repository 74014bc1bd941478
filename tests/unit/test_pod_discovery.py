"""Pods turned into file_sd groups with the meta labels of Prometheus' own pod discovery."""

from __future__ import annotations

from typing import Any

from order_devtools.observability import pod_discovery

P = "__meta_kubernetes_pod_"


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": "orders-api-7d9-abcde",
            "uid": "u-1",
            "labels": {"app.kubernetes.io/component": "api", "pod-template-hash": "7d9"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "orders-api-7d9", "controller": True},
            ],
        },
        "spec": {
            "nodeName": "real-node-0",
            "containers": [
                {
                    "name": "api",
                    "image": "local.test/api:1",
                    "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                },
                {"name": "sidecar", "image": "local.test/sidecar:1"},
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.245.0.7",
            "hostIP": "10.245.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "api", "containerID": "containerd://c1"}],
            **status,
        },
    }


def test_a_declared_port_is_a_target_with_the_pod_s_sanitized_labels_and_annotations() -> None:
    groups = pod_discovery.target_groups([_pod()])
    (api,) = [g for g in groups if g["labels"][f"{P}container_name"] == "api"]
    assert api["targets"] == ["10.245.0.7:8000"]
    labels = api["labels"]
    assert labels["__meta_kubernetes_namespace"] == "shop"
    assert labels[f"{P}name"] == "orders-api-7d9-abcde"
    assert labels[f"{P}ready"] == "true"
    assert labels[f"{P}phase"] == "Running"
    assert labels[f"{P}node_name"] == "real-node-0"
    assert labels[f"{P}label_app_kubernetes_io_component"] == "api"
    assert labels[f"{P}labelpresent_app_kubernetes_io_component"] == "true"
    assert labels[f"{P}annotation_prometheus_io_scrape"] == "true"
    assert labels[f"{P}annotation_prometheus_io_port"] == "8000"
    assert labels[f"{P}controller_kind"] == "ReplicaSet"
    assert labels[f"{P}container_port_number"] == "8000"
    assert labels[f"{P}container_port_name"] == "http"
    assert labels[f"{P}container_id"] == "containerd://c1"
    assert labels[f"{P}container_init"] == "false"


def test_a_container_without_ports_is_the_bare_pod_ip() -> None:
    groups = pod_discovery.target_groups([_pod()])
    (sidecar,) = [g for g in groups if g["labels"][f"{P}container_name"] == "sidecar"]
    assert sidecar["targets"] == ["10.245.0.7"]
    assert f"{P}container_port_number" not in sidecar["labels"]


def test_a_pod_without_an_ip_yet_has_no_targets() -> None:
    pod = _pod(phase="Pending")
    del pod["status"]["podIP"]
    assert pod_discovery.target_groups([pod]) == []


def test_readiness_follows_the_ready_condition() -> None:
    (group, _) = pod_discovery.target_groups(
        [_pod(conditions=[{"type": "Ready", "status": "False"}])]
    )
    assert group["labels"][f"{P}ready"] == "false"
