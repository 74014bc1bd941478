"""A real Prometheus scraping the pipeline's pods on the real node, as the canary analysis
needs it: it finds the API and processor pods through the API server and their annotations,
labels every series with the pod's namespace, name and component, keeps the metrics' own labels,
and answers pods (the in-cluster operator) at the node's bridge address.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import cluster_pipeline, engines
from order_devtools.observability import rules

from .conftest import ClusterPrometheus, installed_pipeline
from .k8s_helpers import wait_for

# Needs the node this tool starts on this host, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

COMPONENTS = ("api", "processor")


@pytest.fixture(scope="module")
def pipeline(
    kube_cluster: local_cluster.ClusterAccess,
    real_node: local_cluster.RealNode,
    pod_engines: engines.Engines,
    cluster_prometheus: ClusterPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[cluster_pipeline.ClusterPipeline]:
    """Installed after Prometheus started, so it discovers the pods as they come."""
    with installed_pipeline(
        kube_cluster, real_node, pod_engines, tmp_path_factory.mktemp("release")
    ) as installed:
        yield installed


def _pod_names(pipeline: cluster_pipeline.ClusterPipeline, component: str) -> set[str]:
    with pipeline.cluster.api_client() as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(
            pipeline.namespace, label_selector=f"app.kubernetes.io/component={component}"
        )
    return {pod.metadata.name for pod in pods.items if pod.status.phase == "Running"}


def _pipeline_targets(
    prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline
) -> list[dict[str, Any]]:
    return [
        target
        for target in prometheus.server.targets()
        if target["labels"].get("namespace") == pipeline.namespace
    ]


def _seen(prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline) -> str:
    """What discovery and scraping saw of the pipeline, for a failure message."""
    discovered = prometheus.server.discovered
    pods = sorted(
        {
            group["labels"]["__meta_kubernetes_pod_name"]
            for group in (discovered.groups if discovered else [])
            if group["labels"]["__meta_kubernetes_namespace"] == pipeline.namespace
        }
    )
    targets = [
        f"{t['labels'].get('pod')}:{t['health']} {t.get('lastError', '')}"
        for t in _pipeline_targets(prometheus, pipeline)
    ]
    error = discovered.error if discovered else None
    return f"discovered pods {pods} (last error: {error}); targets {targets}"


def _wait_all_up(
    prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline, timeout: float = 60
) -> None:
    """Until every running API and processor pod is a target (the HPA may add an API pod
    after the install) and every target of the pipeline is up."""
    deadline = time.monotonic() + timeout
    while True:
        targets = _pipeline_targets(prometheus, pipeline)
        scraped = {
            component: {
                t["labels"].get("pod") for t in targets if t["labels"].get("component") == component
            }
            for component in COMPONENTS
        }
        running = {component: _pod_names(pipeline, component) for component in COMPONENTS}
        if (
            scraped == running
            and all(running.values())
            and all(t["health"] == "up" for t in targets)
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the API and processor pods not all scraped after {timeout:.0f} s; "
                f"{_seen(prometheus, pipeline)}"
            )
        time.sleep(0.5)


def _sum(prometheus: ClusterPrometheus, expr: str) -> float:
    return sum(float(series["value"][1]) for series in prometheus.server.query(expr))


def test_prometheus_discovers_the_api_and_processor_pods_with_their_namespace_pod_and_component(
    cluster_prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline
) -> None:
    _wait_all_up(cluster_prometheus, pipeline)
    targets = _pipeline_targets(cluster_prometheus, pipeline)
    for component in COMPONENTS:
        labels = [t["labels"] for t in targets if t["labels"]["component"] == component]
        assert {label["pod"] for label in labels} == _pod_names(pipeline, component)
        for label in labels:
            assert label["job"] == rules.JOBS[component]
            assert label["pipeline"] == cluster_pipeline.PIPELINE
            # Pod IPs on the real node's subnet, at the annotated port.
            address = label["instance"]
            assert address.startswith("10.245.0."), address


def _post_order(pipeline: cluster_pipeline.ClusterPipeline) -> None:
    with httpx.Client(base_url=pipeline.api_url(), timeout=10) as api:
        credentials = {
            "client_id": cluster_pipeline.CLIENT_ID,
            "client_secret": pipeline.client_secret,
        }
        token = api.post("/v1/auth/token", json=credentials)
        assert token.status_code == 200, token.text
        order = {
            "customer_id": "c-prometheus",
            "items": [{"sku": "SKU-STICKER", "quantity": 1}],
            "currency": "USD",
            "payment_token": "tok_ok",
        }
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        response = api.post("/v1/orders", json=order, headers=headers)
        assert response.status_code == 202, response.text


def test_the_api_s_requests_and_the_processor_s_orders_are_queryable_per_pod_after_an_order(
    cluster_prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline
) -> None:
    namespace = pipeline.namespace
    accepted = f'http_requests_total{{namespace="{namespace}",method="POST",status="202"}}'
    completed = f'orders_processed_total{{namespace="{namespace}",status="COMPLETED"}}'
    _wait_all_up(cluster_prometheus, pipeline)
    _post_order(pipeline)
    wait_for(
        lambda: _sum(cluster_prometheus, accepted) >= 1, "the accepted order in Prometheus", 60, 0.5
    )
    wait_for(
        lambda: _sum(cluster_prometheus, completed) >= 1,
        "the completed order in Prometheus",
        90,
        0.5,
    )
    for expr, component in ((accepted, "api"), (completed, "processor")):
        for series in cluster_prometheus.server.query(expr):
            labels = series["metric"]
            # The target's labels added, the metric's own (route, status) kept.
            assert labels["component"] == component
            assert labels["pod"] in _pod_names(pipeline, component)
            assert labels["job"] == rules.JOBS[component]
    (api_series,) = [
        s for s in cluster_prometheus.server.query(accepted) if float(s["value"][1]) >= 1
    ]
    assert api_series["metric"]["route"]


def test_a_pod_on_the_node_queries_prometheus_at_the_bridge_url(
    cluster_prometheus: ClusterPrometheus, pipeline: cluster_pipeline.ClusterPipeline
) -> None:
    assert (
        urllib.parse.urlsplit(cluster_prometheus.pod_url).hostname == local_cluster.BRIDGE_ADDRESS
    )
    _wait_all_up(cluster_prometheus, pipeline)
    (api_pod, *_) = sorted(_pod_names(pipeline, "api"))
    query = f'up{{namespace="{pipeline.namespace}"}}'
    url = f"{cluster_prometheus.pod_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    script = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    result = pipeline.kubectl("exec", api_pod, "--", "python", "-c", script, check=False)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "success"
    seen = {series["metric"]["pod"] for series in body["data"]["result"]}
    assert api_pod in seen
