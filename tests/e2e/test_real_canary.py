"""Canary rollouts on the real node, judged by a real Prometheus scraping the real pods.

The chart installs the operator (in a pod) and a pipeline whose `spec.rollout` analyses every
10 s against the Prometheus of `cluster_prometheus`, which pods reach at the node's bridge
address. Orders flow all along, from threads that open a connection per order so that
kube-proxy spreads them over the API's stable and canary pods as their counts say.

- A good processor and then a good API go through 25 % and 50 % to a pause; the operator pod
  is deleted during the processor's pause, its successor resumes from status, and `promote`
  takes each to 100 %.
- A processor whose fraud rules are misconfigured (a velocity limit of one order a minute and
  a low threshold: returning customers are rejected) is compared against the stable one (a
  one-sided Fisher test on the rejected share) and rolled back with its reason and an Event.

Through all of it every accepted order ends in exactly one final state, and Prometheus, over
every pod that ever ran, never counts more orders processed than were accepted.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import cluster_pipeline, engines
from order_operator.rollout import spec as rollout_spec

from .conftest import ClusterPrometheus, installed_pipeline
from .k8s_helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.local_control_plane]

GROUP, VERSION, PLURAL = "order-pipeline.dev", "v1alpha1", "orderpipelines"
FINAL = {"COMPLETED", "REJECTED", "FAILED", "CANCELLED"}
INTERVAL = 10
CUSTOMERS = 3000
# The bad version's symptom: compared with the stable side, it rejects what should complete.
REJECTED_RATIO = {
    "name": "orders-rejected",
    "errors": {"metric": "orders_processed_total", "matchers": 'status="REJECTED"'},
    "total": {"metric": "orders_processed_total"},
}


def loose_latencies(component: rollout_spec.Component) -> list[dict[str, Any]]:
    """The default latency comparisons with room for this machine: two cores running the
    control plane, the node, the engines, Prometheus and the load, where a pod just started
    answers its first requests several times slower than one that has run for a while."""
    analysis = rollout_spec.Analysis.model_validate({"prometheus": {"address": "http://x"}})
    return [
        latency.model_copy(update={"tolerance": 4.0, "tolerance_seconds": 0.5}).model_dump(
            by_alias=True
        )
        for latency in analysis.checks(component).latencies
    ]


def spec_overrides(prometheus_url: str) -> dict[str, Any]:
    return {
        "api": {
            "env": {"RATE_LIMIT_PER_MINUTE": "1000000"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 2},
        },
        "processor": {
            "concurrency": 4,
            "scaling": {"minReplicas": 2, "maxReplicas": 2, "pollingIntervalSeconds": 2},
        },
        "rollout": {
            "steps": [{"weight": 25}, {"weight": 50}, {"pause": {}}, {"weight": 100}],
            "progressDeadlineSeconds": 240,
            "analysis": {
                "prometheus": {"address": prometheus_url},
                "intervalSeconds": INTERVAL,
                "minSamples": 20,
                "failureLimit": 1,
                "api": {"latencies": loose_latencies("api")},
                "processor": {
                    "errorRatios": [REJECTED_RATIO],
                    "latencies": loose_latencies("processor"),
                },
            },
        },
    }


@pytest.fixture(scope="module")
def pipeline(
    kube_cluster: local_cluster.ClusterAccess,
    real_node: local_cluster.RealNode,
    pod_engines: engines.Engines,
    cluster_prometheus: ClusterPrometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[cluster_pipeline.ClusterPipeline]:
    with installed_pipeline(
        kube_cluster,
        real_node,
        pod_engines,
        tmp_path_factory.mktemp("release"),
        spec_overrides=spec_overrides(cluster_prometheus.pod_url),
    ) as installed:
        yield installed


class Orders:
    """Orders posted from threads until stopped, each on a new connection (kube-proxy balances
    connections); the ids of those answered 202."""

    def __init__(self, pipeline: cluster_pipeline.ClusterPipeline, *, workers: int = 4) -> None:
        self.url = pipeline.api_url()
        credentials = {
            "client_id": cluster_pipeline.CLIENT_ID,
            "client_secret": pipeline.client_secret,
        }
        token = httpx.post(f"{self.url}/v1/auth/token", json=credentials, timeout=10)
        assert token.status_code == 200, token.text
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        self.accepted: list[str] = []
        self.refused = 0
        self._workers = workers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(workers)
        self._futures: list[concurrent.futures.Future[None]] = []

    def _post(self) -> None:
        while not self._stop.wait(0.05):
            order = {
                # Customers come back about once a minute: under the stable fraud rules'
                # velocity limit (five a minute), over the bad version's.
                "customer_id": f"customer-{random.randrange(CUSTOMERS)}",
                "items": [{"sku": "SKU-STICKER", "quantity": 1}],
                "currency": "USD",
                "payment_token": "tok_ok",
            }
            try:
                response = httpx.post(
                    f"{self.url}/v1/orders", json=order, headers=self.headers, timeout=10
                )
            except httpx.HTTPError:
                with self._lock:
                    self.refused += 1
                continue
            with self._lock:
                if response.status_code == 202:
                    self.accepted.append(response.json()["order_id"])
                else:
                    self.refused += 1

    def __enter__(self) -> Orders:
        self._futures = [self._pool.submit(self._post) for _ in range(self._workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()


def custom(pipeline: cluster_pipeline.ClusterPipeline) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(pipeline.cluster.api_client())


def body_of(pipeline: cluster_pipeline.ClusterPipeline) -> dict[str, Any]:
    found: dict[str, Any] = custom(pipeline).get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, pipeline.namespace, PLURAL, cluster_pipeline.PIPELINE
    )
    return found


def rollout_of(pipeline: cluster_pipeline.ClusterPipeline, component: str) -> dict[str, Any]:
    status = body_of(pipeline).get("status") or {}
    found: dict[str, Any] = (status.get("rollout") or {}).get(component) or {}
    return found


def patch_spec(pipeline: cluster_pipeline.ClusterPipeline, spec: dict[str, Any]) -> None:
    custom(pipeline).patch_namespaced_custom_object(
        GROUP, VERSION, pipeline.namespace, PLURAL, cluster_pipeline.PIPELINE, {"spec": spec}
    )


def wait_rollout(
    pipeline: cluster_pipeline.ClusterPipeline,
    component: str,
    phase: str,
    *,
    changed_from: str,
    timeout: float,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Until the component's rollout has left `changed_from` (a stable revision) behind, or
    remembered it failed, and is in `phase`; every status read on the way into `seen`."""

    def reached() -> bool:
        status = rollout_of(pipeline, component)
        if seen is not None:
            seen.append(status)
        moved = status.get("stableRevision") != changed_from or status.get("failedRevision")
        return bool(moved) and status.get("phase") == phase

    deadline = time.monotonic() + timeout
    while not reached():
        if time.monotonic() > deadline:
            pytest.fail(
                f"the {component} rollout not {phase} after {timeout:.0f} s: "
                f"{rollout_of(pipeline, component)}; operator log: {pipeline.operator_log(40)}"
            )
        time.sleep(1.0)
    return rollout_of(pipeline, component)


def final_statuses(
    pipeline: cluster_pipeline.ClusterPipeline, order_ids: list[str]
) -> dict[str, str]:
    dynamodb = pipeline.engines.dynamodb_client()
    statuses: dict[str, str] = {}
    for start in range(0, len(order_ids), 100):
        keys = [{"order_id": {"S": order_id}} for order_id in order_ids[start : start + 100]]
        request: Any = {pipeline.orders_table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(pipeline.orders_table, []):
                statuses[item["order_id"]["S"]] = item["status"]["S"]
            request = response.get("UnprocessedKeys") or None
    return statuses


def processed_count(
    pipeline: cluster_pipeline.ClusterPipeline, prometheus: ClusterPrometheus
) -> float:
    """Orders the namespace's processors finished, over every pod that ever ran there (a
    canary's counters included: each pod's counter at its highest)."""
    query = f'sum(max_over_time(orders_processed_total{{namespace="{pipeline.namespace}"}}[1h]))'
    result = prometheus.server.query(query)
    return float(result[0]["value"][1]) if result else 0.0


def assert_each_order_final_once(
    pipeline: cluster_pipeline.ClusterPipeline,
    prometheus: ClusterPrometheus,
    orders: Orders,
    *,
    processed_before: float,
) -> dict[str, str]:
    """Every accepted order in one final state, and the processors finished each once."""
    assert orders.accepted, "no order was accepted"

    def all_final() -> bool:
        statuses = final_statuses(pipeline, orders.accepted)
        return len(statuses) == len(orders.accepted) and set(statuses.values()) <= FINAL

    wait_for(all_final, f"{len(orders.accepted)} accepted orders final", timeout=120, interval=1)
    expected = processed_before + len(orders.accepted)
    time.sleep(5)  # a few more scrapes of the pods still running
    counted = processed_count(pipeline, prometheus)
    # A pod stopped between two scrapes takes its last increments with it, so Prometheus may
    # count a few less than were processed, never more unless one was processed twice.
    assert counted <= expected, f"{counted} orders processed, {expected} accepted"
    assert counted >= 0.9 * expected, f"Prometheus counted {counted} of {expected}"
    return final_statuses(pipeline, orders.accepted)


def canary_replicas(pipeline: cluster_pipeline.ClusterPipeline, component: str) -> int:
    apps = client.AppsV1Api(pipeline.cluster.api_client())
    try:
        found = apps.read_namespaced_deployment(
            f"{cluster_pipeline.PIPELINE}-{component}-canary", pipeline.namespace
        )
    except client.ApiException as error:
        if error.status == 404:
            return 0
        raise
    return int(found.spec.replicas or 0)


def command(pipeline: cluster_pipeline.ClusterPipeline, action: str) -> None:
    """What `kubectl orderpipeline <action>` writes."""
    value = json.dumps({"action": action, "id": uuid.uuid4().hex})
    custom(pipeline).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        pipeline.namespace,
        PLURAL,
        cluster_pipeline.PIPELINE,
        {"metadata": {"annotations": {f"{GROUP}/rollout-command": value}}},
    )


def restart_operator(pipeline: cluster_pipeline.ClusterPipeline) -> None:
    """Delete the operator's pod; its Deployment starts another."""
    core = client.CoreV1Api(pipeline.cluster.api_client())
    selector = "app.kubernetes.io/component=operator"

    def pods() -> list[client.V1Pod]:
        found = core.list_namespaced_pod(pipeline.namespace, label_selector=selector).items
        return [pod for pod in found if pod.metadata.deletion_timestamp is None]

    (old,) = pods()
    core.delete_namespaced_pod(old.metadata.name, pipeline.namespace)

    def successor_ready() -> bool:
        return any(
            pod.metadata.name != old.metadata.name
            and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            for pod in pods()
        )

    wait_for(successor_ready, "a new operator pod Ready", timeout=120, interval=1.0)


def has_event(pipeline: cluster_pipeline.ClusterPipeline, reason: str, text: str) -> bool:
    events = client.CoreV1Api(pipeline.cluster.api_client()).list_namespaced_event(
        pipeline.namespace
    )
    return any(e.reason == reason and text in (e.message or "") for e in events.items)


def _step_of(status: dict[str, Any]) -> tuple[Any, ...]:
    return status.get("phase"), status.get("currentStep"), status.get("targetWeight")


def get_opl(pipeline: cluster_pipeline.ClusterPipeline) -> str:
    return pipeline.kubectl("get", "opl", check=False).stdout


def promote_from_the_pause(
    pipeline: cluster_pipeline.ClusterPipeline,
    component: str,
    before: str,
    *,
    restart: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Through 25 % and 50 % (each on a passing analysis) to the pause; optionally restart the
    operator there; then `promote` to 100 %. The statuses seen on the way, and the last."""
    seen: list[dict[str, Any]] = []

    def paused() -> bool:
        status = rollout_of(pipeline, component)
        if not seen or _step_of(seen[-1]) != _step_of(status):
            print(get_opl(pipeline))  # what `kubectl get opl` shows at each step (`-s`)
        seen.append(status)
        return status.get("phase") == "Paused" and status.get("currentStep") == 2

    try:
        wait_for(paused, f"the {component} rollout paused at step 3", timeout=240, interval=1.0)
    except BaseException:
        print(f"{component} rollout: {rollout_of(pipeline, component)}")
        print(pipeline.operator_log(40))
        raise
    at_pause = rollout_of(pipeline, component)
    assert at_pause["targetWeight"] == 50
    assert at_pause["lastAnalysis"]["verdict"] == "Pass", at_pause["lastAnalysis"]
    assert canary_replicas(pipeline, component) > 0
    if restart:
        restart_operator(pipeline)
        time.sleep(2 * INTERVAL)  # passes of the new operator, still paused
        resumed = rollout_of(pipeline, component)
        for key in ("phase", "currentStep", "canaryRevision", "stableRevision", "stepStartedAt"):
            assert resumed[key] == at_pause[key], (key, resumed, at_pause)
    command(pipeline, "promote")
    healthy = wait_rollout(pipeline, component, "Healthy", changed_from=before, timeout=120)
    print(get_opl(pipeline))
    assert healthy["stableRevision"] == at_pause["canaryRevision"]
    assert healthy.get("failedRevision") is None
    return healthy, seen


def test_a_good_processor_and_then_a_good_api_are_promoted_step_by_step(
    pipeline: cluster_pipeline.ClusterPipeline, cluster_prometheus: ClusterPrometheus
) -> None:
    before = {c: rollout_of(pipeline, c)["stableRevision"] for c in ("processor", "api")}
    processed_before = processed_count(pipeline, cluster_prometheus)
    with Orders(pipeline) as orders:
        time.sleep(5)
        patch_spec(
            pipeline,
            {
                "processor": {"env": {"RELEASE_NOTE": "good"}},
                "api": {"env": {"RATE_LIMIT_PER_MINUTE": "1000000", "RELEASE_NOTE": "good"}},
            },
        )
        promote_from_the_pause(pipeline, "processor", before["processor"], restart=True)
        _, api_seen = promote_from_the_pause(pipeline, "api", before["api"])
    # Each API step advanced on the share of requests its canary really got (Prometheus).
    shares = [s["observedShare"] for s in api_seen if s.get("observedShare") is not None]
    assert shares, "no observed share of the API canary"
    assert all(0 < share < 1 for share in shares), shares
    for component in ("processor", "api"):
        for reason in ("RolloutStarted", "StepCompleted", "Paused", "Promoted"):
            assert has_event(pipeline, reason, component), (component, reason)
    wait_for(lambda: canary_replicas(pipeline, "processor") == 0, "the processor canary at zero")
    wait_for(lambda: canary_replicas(pipeline, "api") == 0, "the API canary at zero")
    statuses = assert_each_order_final_once(
        pipeline, cluster_prometheus, orders, processed_before=processed_before
    )
    assert set(statuses.values()) == {"COMPLETED"}


def test_a_processor_that_rejects_returning_customers_is_rolled_back_by_the_comparison(
    pipeline: cluster_pipeline.ClusterPipeline, cluster_prometheus: ClusterPrometheus
) -> None:
    before = rollout_of(pipeline, "processor")["stableRevision"]
    processed_before = processed_count(pipeline, cluster_prometheus)
    with Orders(pipeline) as orders:
        time.sleep(5)
        patch_spec(
            pipeline, {"processor": {"env": {"VELOCITY_LIMIT": "1", "FRAUD_THRESHOLD": "40"}}}
        )
        degraded = wait_rollout(pipeline, "processor", "Degraded", changed_from=before, timeout=240)
        time.sleep(5)  # orders after the rollback: the stable side alone
    assert degraded["stableRevision"] == before
    assert degraded["abortReason"].startswith("AnalysisFailed"), degraded
    (measure,) = [m for m in degraded["lastAnalysis"]["measures"] if m["name"] == "orders-rejected"]
    assert measure["verdict"] == "Fail", measure
    assert has_event(pipeline, "RolloutAborted", "processor")
    wait_for(lambda: canary_replicas(pipeline, "processor") == 0, "the processor canary at zero")
    statuses = assert_each_order_final_once(
        pipeline, cluster_prometheus, orders, processed_before=processed_before
    )
    # The canary rejected what it took before it was rolled back; nothing failed or was lost.
    assert set(statuses.values()) <= {"COMPLETED", "REJECTED"}
    assert "REJECTED" in statuses.values()
