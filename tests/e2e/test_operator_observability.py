"""The Operator dashboard and the operator's alerts on a real Prometheus (Debian's `prometheus`)
scraping the real operator every second while it reconciles on the real control plane: a
pipeline becomes Ready and scales on its backlog, another is refused its Deployments by a
ResourceQuota (reconcile errors, not Ready) and is then deleted (its series goes). Every panel
query and every operator alert's quantity must return labelled series; the dashboard is drawn
from them (`make dashboards` keeps the PNG)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from order_devtools import cluster as local_cluster
from order_devtools import engines
from order_devtools.observability import dashboards, generate, prometheus, promql, render, rules
from tests import observability_checks

from .k8s_helpers import wait_for
from .operator_harness import GROUP, PLURAL, VERSION, condition, operator_running, pipeline_manifest

pytestmark = pytest.mark.e2e


def _create(
    custom: client.CustomObjectsApi, namespace: str, name: str, running: engines.Engines
) -> str:
    manifest = pipeline_manifest(name, running, suffix=uuid.uuid4().hex[:8])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    return str(manifest["spec"]["queue"]["name"])


def _ready(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    ready = condition(body, "Ready")
    return ready is not None and ready["status"] == "True"


def test_operator_dashboard_and_alerts_on_a_real_prometheus(
    kube_cluster: local_cluster.ClusterAccess,
    k8s_api: client.ApiClient,
    local_engines: engines.Engines,
    make_namespace: Callable[..., str],
    tmp_path: Path,
) -> None:
    custom = client.CustomObjectsApi(k8s_api)
    with operator_running(kube_cluster, k8s_api, tmp_path) as operator:
        target = prometheus.Target(rules.JOBS["operator"], f"127.0.0.1:{operator.metrics_port}", {})
        with prometheus.running(
            tmp_path / "prometheus", targets=[target], rule_files=[generate.RULES_FILE]
        ) as server:
            wait_for(lambda: {t["health"] for t in server.targets()} == {"up"}, "operator scraped")
            started = time.time()
            shop = make_namespace()
            queue = _create(custom, shop, "shop", local_engines)
            wait_for(lambda: _ready(custom, shop, "shop"), "shop Ready", timeout=90)
            sqs = local_engines.sqs_client()
            url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            for start in range(0, 300, 10):
                entries = [{"Id": str(i), "MessageBody": f"{start + i}"} for i in range(10)]
                sqs.send_message_batch(QueueUrl=url, Entries=entries)
            # a namespace that allows no Deployments: every pass there fails
            blocked = make_namespace()
            client.CoreV1Api(k8s_api).create_namespaced_resource_quota(
                blocked,
                client.V1ResourceQuota(
                    metadata=client.V1ObjectMeta(name="no-deployments"),
                    spec=client.V1ResourceQuotaSpec(hard={"count/deployments.apps": "0"}),
                ),
            )
            _create(custom, blocked, "blocked", local_engines)
            for signal in (
                "sum(orderpipeline_scaling_decisions_total) > 0",
                "sum(orderpipeline_reconcile_errors_total) > 0",
            ):
                wait_for(lambda s=signal: bool(server.query(s)), signal, timeout=60)
            time.sleep(3)  # a few more scrapes and rule evaluations

            model = generate.load_dashboard(generate.dashboard_path(dashboards.OPERATOR))
            for query in promql.panel_queries(model):
                observability_checks.assert_panel_query_answers(server, query)
            ready = {
                (s["metric"]["namespace"], s["metric"]["name"]): s["value"][1]
                for s in server.query("orderpipeline_ready")
            }
            assert ready == {(shop, "shop"): "1", (blocked, "blocked"): "0"}

            operator_alerts = [
                a
                for a in rules.alerts()
                if a.name
                in {
                    "OrderOperatorReconcileErrors",
                    "OrderPipelineNotReady",
                    "OrderScrapeTargetDown",
                }
            ]
            for alert in operator_alerts:
                server.query(alert.expr)
                for quantity in promql.compared_quantities(alert.expr):
                    assert server.query(quantity), f"{alert.name}: nothing for {quantity}"
            errors = server.query('ALERTS{alertname="OrderOperatorReconcileErrors"}')
            assert [s["metric"]["alertstate"] for s in errors] == ["pending"]

            # a deleted pipeline leaves no readiness series behind to alert on
            custom.delete_namespaced_custom_object(GROUP, VERSION, blocked, PLURAL, "blocked")
            wait_for(
                lambda: f'namespace="{blocked}"' not in operator.metrics(),
                "the blocked pipeline's readiness series gone",
            )

            png = render.render(
                server,
                model,
                tmp_path / f"dashboard-{dashboards.OPERATOR.uid}.png",
                start=started,
                end=time.time(),
                rate_window="15s",
            )
            assert png.stat().st_size > 30_000
            keep = os.environ.get("OBSERVABILITY_PNG_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(png, Path(keep) / png.name)
