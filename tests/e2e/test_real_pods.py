"""The chart's pods running the real images on the real node.

One release for the module: the operator runs in-cluster as the chart's ServiceAccount and
reconciles a pipeline whose API and processor pods pass their real probes in a namespace
enforcing `restricted`; `helm test` passes; an order sent to the API Service completes and is
read back through its status URL; backlog scales the processor's pods out and back in, and load
scales the API on real CPU, losing no order; the PDB refuses an eviction that would break it;
`kubectl logs`, `exec` and `port-forward` work. The engines listen on the node's bridge address,
the only place pods and this host both reach.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import cluster_pipeline, engines, images

from .k8s_helpers import port_forward, wait_for

# Needs the node this tool starts on this host, so it cannot run against ORDER_PIPELINE_KUBECONFIG.
pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

PIPELINE = cluster_pipeline.PIPELINE
FINAL = {"COMPLETED", "REJECTED", "FAILED", "CANCELLED"}
API_SCALE_DOWN_SECONDS = 20
SPEC = {
    "api": {
        # The load tests send far more than a client's default 100 a minute.
        "env": {"RATE_LIMIT_PER_MINUTE": "1000000"},
        "autoscaling": {
            "minReplicas": 2,
            "maxReplicas": 4,
            "targetCPUUtilizationPercentage": 30,
            "scaleDownStabilizationSeconds": API_SCALE_DOWN_SECONDS,
        },
    },
    "processor": {
        # Slow on purpose, so a backlog builds up and outlasts a poll.
        "concurrency": 1,
        "batchSize": 1,
        "scaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetMessagesPerReplica": 40,
            "pollingIntervalSeconds": 1,
            "cooldownSeconds": 5,
        },
    },
}


@dataclass
class Installation:
    pipeline: cluster_pipeline.ClusterPipeline
    node_name: str
    core: client.CoreV1Api
    apps: client.AppsV1Api
    autoscaling: client.AutoscalingV2Api

    @property
    def namespace(self) -> str:
        return self.pipeline.namespace

    def pods(self, component: str) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/component={component}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def ready_pods(self, component: str) -> list[client.V1Pod]:
        return [pod for pod in self.pods(component) if is_ready(pod)]


def is_ready(pod: client.V1Pod) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture(scope="module")
def installed(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    real_node: local_cluster.RealNode,
    pod_engines: engines.Engines,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installation]:
    """`make test` builds the images first (`make images`); here they come from the cache."""
    try:
        pipeline = cluster_pipeline.install(
            kube_cluster,
            real_node,
            pod_engines,
            tmp_path_factory.mktemp("release"),
            spec_overrides=SPEC,
        )
    except (images.ImageBuildError, cluster_pipeline.ClusterPipelineError) as error:
        pytest.fail(f"the pipeline could not be installed on the real node: {error}")
    try:
        yield Installation(
            pipeline=pipeline,
            node_name=real_node.name,
            core=client.CoreV1Api(k8s_api),
            apps=client.AppsV1Api(k8s_api),
            autoscaling=client.AutoscalingV2Api(k8s_api),
        )
    finally:
        pipeline.uninstall()


def _pod_states(installation: Installation) -> str:
    pods = installation.core.list_namespaced_pod(installation.namespace).items
    return ", ".join(
        f"{pod.metadata.name}@{pod.spec.node_name}:{pod.status.phase}"
        f"{'/ready' if is_ready(pod) else ''}"
        for pod in pods
    )


def _token(api: httpx.Client, installation: Installation) -> str:
    credentials = {
        "client_id": cluster_pipeline.CLIENT_ID,
        "client_secret": installation.pipeline.client_secret,
    }
    response = api.post("/v1/auth/token", json=credentials)
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def _order(customer: str) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "items": [{"sku": "SKU-STICKER", "quantity": 1}],
        "currency": "USD",
        "payment_token": "tok_ok",
    }


def _status(api: httpx.Client, status_url: str) -> str:
    """Read a status URL through `api` (it names the in-cluster Service address)."""
    parts = urllib.parse.urlsplit(status_url)
    response = api.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def _final_statuses(installation: Installation, order_ids: list[str]) -> dict[str, str]:
    dynamodb = installation.pipeline.engines.dynamodb_client()
    statuses: dict[str, str] = {}
    for start in range(0, len(order_ids), 100):
        keys = [{"order_id": {"S": order_id}} for order_id in order_ids[start : start + 100]]
        table = installation.pipeline.orders_table
        request: Any = {table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table, []):
                statuses[item["order_id"]["S"]] = item["status"]["S"]
            request = response.get("UnprocessedKeys") or None
    return statuses


def _wait_all_final(installation: Installation, order_ids: list[str], timeout: float) -> None:
    def all_final() -> bool:
        statuses = _final_statuses(installation, order_ids)
        return len(statuses) == len(order_ids) and set(statuses.values()) <= FINAL

    wait_for(all_final, f"{len(order_ids)} accepted orders in a final state", timeout, 1.0)


@dataclass
class Load:
    """Orders posted from threads until stopped; the ids of those answered 202."""

    api_url: str
    access_token: str
    workers: int = 4
    pause_seconds: float = 0.02
    """Between one worker's orders: the load stays within what the processors drain."""
    accepted: list[str] | None = None
    refused: int = 0

    def __post_init__(self) -> None:
        self.accepted = []
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers)
        self._lock = threading.Lock()
        self._futures: list[concurrent.futures.Future[None]] = []

    def _post(self, worker: int) -> None:
        headers = {"Authorization": f"Bearer {self.access_token}"}
        with httpx.Client(base_url=self.api_url, timeout=10) as api:
            sent = 0
            while not self._stop.wait(self.pause_seconds):
                sent += 1
                try:
                    response = api.post(
                        "/v1/orders", json=_order(f"w{worker}-{sent}"), headers=headers
                    )
                except httpx.HTTPError:
                    with self._lock:
                        self.refused += 1
                    continue
                with self._lock:
                    if response.status_code == 202:
                        assert self.accepted is not None
                        self.accepted.append(response.json()["order_id"])
                    else:
                        self.refused += 1

    def __enter__(self) -> Load:
        self._futures = [self._pool.submit(self._post, i) for i in range(self.workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()


def _load(installation: Installation, *, workers: int) -> Load:
    """Orders from `workers` threads to the API Service, with a token of the pipeline's client."""
    api_url = installation.pipeline.api_url()
    with httpx.Client(base_url=api_url, timeout=10) as api:
        return Load(api_url, _token(api, installation), workers=workers)


def test_the_operator_and_the_pipeline_run_on_the_real_node_and_helm_test_passes(
    installed: Installation,
) -> None:
    (operator,) = installed.pods("operator")
    assert operator.spec.node_name == installed.node_name
    assert operator.spec.service_account_name.endswith("operator")
    for component in ("api", "processor"):
        for pod in installed.ready_pods(component):
            assert pod.spec.node_name == installed.node_name
            (container,) = pod.status.container_statuses
            assert container.ready
            assert container.state.running is not None
    namespace = installed.core.read_namespace(installed.namespace)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    result = installed.pipeline.helm("test", installed.pipeline.release, "--timeout", "180s")
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def test_an_order_sent_to_the_api_service_completes_and_its_status_url_says_so(
    installed: Installation,
) -> None:
    with httpx.Client(base_url=installed.pipeline.api_url(), timeout=10) as api:
        headers = {"Authorization": f"Bearer {_token(api, installed)}"}
        response = api.post("/v1/orders", json=_order("c-one"), headers=headers)
        assert response.status_code == 202, response.text
        status_url = response.json()["status_url"]
        assert status_url.startswith(f"http://{PIPELINE}-api.{installed.namespace}.svc/")
        wait_for(
            lambda: _status(api, status_url) == "COMPLETED",
            f"the order COMPLETED; {_pod_states(installed)}",
            60,
            0.5,
        )


def test_logs_exec_and_port_forward_reach_the_pods(installed: Installation) -> None:
    api_pod = installed.ready_pods("api")[0].metadata.name
    logs = installed.pipeline.kubectl("logs", api_pod).stdout
    assert '"component": "order-api"' in logs, logs[-2000:]
    exec_result = installed.pipeline.kubectl(
        "exec", api_pod, "--", "python", "-c", "import os; print(os.getuid())"
    )
    assert exec_result.stdout.strip() == "10001"
    with port_forward(
        installed.pipeline.cluster, installed.namespace, f"pod/{api_pod}", 8000
    ) as port:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert response.status_code == 200


def _processor_replicas(installation: Installation) -> int:
    deployment = installation.apps.read_namespaced_deployment(
        f"{PIPELINE}-processor", installation.namespace
    )
    return int(deployment.spec.replicas or 0)


def test_backlog_scales_the_processor_out_and_draining_scales_it_in_losing_nothing(
    installed: Installation,
) -> None:
    sqs = installed.pipeline.engines.sqs_client()
    with _load(installed, workers=4) as load:
        wait_for(
            lambda: _processor_replicas(installed) >= 2,
            f"the processor scaled out on backlog; {_pod_states(installed)}",
            90,
            0.5,
        )
    wait_for(
        lambda: len(installed.ready_pods("processor")) >= 2,
        f"a second processor pod Ready: {_pod_states(installed)}",
        90,
    )
    assert load.accepted
    _wait_all_final(installed, load.accepted, timeout=240)
    queue_url = sqs.get_queue_url(QueueName=installed.pipeline.queue)["QueueUrl"]
    wait_for(
        lambda: _processor_replicas(installed) == 1,
        f"the processor back at one replica; {_pod_states(installed)}",
        120,
        1.0,
    )
    wait_for(lambda: len(installed.pods("processor")) == 1, "surplus processor pods gone", 120)
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    statuses = _final_statuses(installed, load.accepted)
    assert set(statuses) == set(load.accepted)  # none lost, whichever pod stopped


def _api_replicas(installation: Installation) -> int:
    hpa = installation.autoscaling.read_namespaced_horizontal_pod_autoscaler(
        f"{PIPELINE}-api", installation.namespace
    )
    return int(hpa.status.desired_replicas or 0)


def test_load_scales_the_api_out_on_real_cpu_and_back_in_after_the_window(
    installed: Installation,
) -> None:
    def cpu_reported() -> bool:
        hpa = installed.autoscaling.read_namespaced_horizontal_pod_autoscaler(
            f"{PIPELINE}-api", installed.namespace
        )
        metrics = hpa.status.current_metrics or []
        return any(
            m.resource and m.resource.current.average_utilization is not None for m in metrics
        )

    wait_for(cpu_reported, "the HPA reading the API pods' CPU from metrics-server", 120, 1.0)
    with _load(installed, workers=6) as load:
        wait_for(
            lambda: _api_replicas(installed) > 2,
            f"the API scaled out on CPU; {_pod_states(installed)}",
            180,
            1.0,
        )
    scaled_out_at = time.monotonic()
    wait_for(
        lambda: _api_replicas(installed) == 2,
        f"the API back at its minimum; {_pod_states(installed)}",
        API_SCALE_DOWN_SECONDS + 120,
        1.0,
    )
    assert time.monotonic() - scaled_out_at >= API_SCALE_DOWN_SECONDS - 5
    _wait_all_final(installed, load.accepted or [], timeout=240)


def _evict(installation: Installation, pod: str) -> int:
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=installation.namespace)
    )
    try:
        installation.core.create_namespaced_pod_eviction(pod, installation.namespace, eviction)
    except client.ApiException as error:
        return int(error.status)
    return 201


def test_the_pdb_refuses_an_eviction_that_would_break_it_and_a_killed_api_pod_loses_nothing(
    installed: Installation,
) -> None:
    wait_for(lambda: len(installed.ready_pods("api")) == 2, "two API pods Ready", 120)
    first, second = (pod.metadata.name for pod in installed.ready_pods("api"))
    # maxUnavailable 1: the first eviction is allowed, the second would leave none.
    assert _evict(installed, first) == 201
    assert _evict(installed, second) == 429
    wait_for(lambda: len(installed.ready_pods("api")) == 2, "the evicted API pod replaced", 120)

    with _load(installed, workers=4) as load:
        time.sleep(3)
        victim = installed.ready_pods("api")[0].metadata.name
        installed.core.delete_namespaced_pod(victim, installed.namespace, grace_period_seconds=0)
        time.sleep(5)
    assert load.accepted
    _wait_all_final(installed, load.accepted, timeout=240)
