"""The shipped dashboards and rules against a real Prometheus (Debian's `prometheus`) scraping a
real API and processor on the real engines every second, after mixed traffic: 202s, 4xx, 429s,
503s, a completed, a rejected and a failed order, a message in the DLQ.

Every Pipeline dashboard query and every rule expression runs through Prometheus' HTTP API:
no error, a non-empty result, the labels its legend names, shares within [0, 1]. Every metric
name a panel or rule uses (parsed with promql-parser) is one the services expose. The dashboard
is rendered to a PNG from those results (`make dashboards` keeps it: OBSERVABILITY_PNG_DIR).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import parser as exposition

from order_devtools import local
from order_devtools.observability import (
    dashboards,
    generate,
    prometheus,
    promql,
    render,
    rules,
)
from tests import faultproxy, observability_checks
from tests.faultproxy import Fault, FaultKind
from tests.integration import helpers
from tests.integration.conftest import LOCAL_AWS_ENV, new_pipeline

pytestmark = pytest.mark.integration

RATE_WINDOW = observability_checks.RATE_WINDOW

SCOPE_LABELS = {"namespace": "local", "pipeline": "demo"}
BUILT_IN = {"up", "ALERTS"}

_HISTOGRAM_SAMPLES = ("_bucket", "_count", "_sum", "_created")


def sample_names(exposition_text: str) -> set[str]:
    """The sample names an exposition offers, also for labelled metrics with no series yet."""
    names: set[str] = set()
    for family in exposition.text_string_to_metric_families(exposition_text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.update({f"{family.name}_total", f"{family.name}_created"})
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in _HISTOGRAM_SAMPLES)
        else:
            names.add(family.name)
    return names


def operator_sample_names() -> set[str]:
    """The operator's metrics as its `/metrics` shows them (its own registry's exposition)."""
    import prometheus_client

    from order_operator import metrics as operator_metrics

    registry = prometheus_client.CollectorRegistry()
    for value in vars(operator_metrics).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            registry.register(value)
    return sample_names(prometheus_client.generate_latest(registry).decode())


@dataclasses.dataclass
class Observed:
    server: prometheus.Prometheus
    service_names: set[str]
    """Sample names the API's and the processor's `/metrics` offer."""
    started: float
    png_dir: Path


def _metrics_text(service: local.ServiceProcess) -> str:
    return httpx.get(service.health_url.replace("/healthz", "/metrics"), timeout=10).text


def _address(service: local.ServiceProcess) -> str:
    return service.health_url.removeprefix("http://").removesuffix("/healthz")


RATE_LIMIT = 30
"""Per client and minute: above what `client` sends in both rounds, below `other`'s burst."""


def _drive_mixed_traffic(
    client: httpx.Client, other: httpx.Client, sqs_proxy: faultproxy.FaultProxy, *, burst: int
) -> list[int]:
    """One round of everything; returns the statuses of `other`'s burst of `burst` orders."""
    access = helpers.token(client)
    placed = [
        helpers.place(client, access, helpers.order_body(customer_id=f"c{i}")) for i in range(8)
    ]
    rejected = helpers.place(client, access, helpers.order_body(customer_id="blocked-7", SKU_MUG=3))
    failed = helpers.place(client, access, helpers.order_body(token="tok_unavailable"))
    # 4xx: no token, a malformed order, an unknown order
    assert client.post("/v1/orders", json=helpers.order_body()).status_code == 401
    assert (
        client.post("/v1/orders", json={"items": []}, headers=helpers.auth(access)).status_code
        == 422
    )
    assert client.get("/v1/orders/does-not-exist", headers=helpers.auth(access)).status_code in (
        401,
        403,
        404,
    )
    # 503: the queue refuses the sends
    with sqs_proxy.faults(Fault(FaultKind.SERVER_ERROR, "SendMessageBatch", times=None)):
        refused = client.post("/v1/orders", json=helpers.order_body(), headers=helpers.auth(access))
    assert refused.status_code == 503, refused.text
    # 429: one client over its per-minute limit
    other_access = helpers.token(other, "other", "other-secret")
    statuses = [
        other.post(
            "/v1/orders",
            json=helpers.order_body(customer_id=f"o{i}"),
            headers=helpers.auth(other_access),
        ).status_code
        for i in range(burst)
    ]
    assert 429 in statuses, statuses
    finals = {helpers.wait_final(client, p["status_url"])["status"] for p in placed}
    assert finals == {"COMPLETED"}
    assert helpers.wait_final(client, rejected["status_url"])["status"] == "REJECTED"
    assert helpers.wait_final(client, failed["status_url"], timeout=90)["status"] == "FAILED"
    return statuses


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, local_engines: Any) -> Iterator[Observed]:
    """Module-scoped: one run of traffic serves every check below."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in LOCAL_AWS_ENV.items():
            env.setenv(name, value)
        yield from _observe(tmp_path_factory.mktemp("observability"), local_engines)


def _observe(base: Path, local_engines: Any) -> Iterator[Observed]:
    pipeline = dataclasses.replace(
        new_pipeline(local_engines, visibility_timeout=1, max_receive_count=2),
        clients={"demo": "demo-secret", "other": "other-secret"},
    )
    with faultproxy.proxied(pipeline.sqs_endpoint) as sqs_proxy:
        api = local.api_process(
            dataclasses.replace(pipeline, sqs_endpoint=sqs_proxy.endpoint),
            local.free_port(),
            base,
            RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
        )
        processor = local.processor_process(
            pipeline,
            local.free_port(),
            base,
            QUEUE_DEPTH_INTERVAL_SECONDS="1",
            WAIT_TIME_SECONDS="1",
        )
        api.start()
        processor.start()
        try:
            targets = [
                prometheus.Target(rules.JOBS["api"], _address(api), SCOPE_LABELS),
                prometheus.Target(rules.JOBS["processor"], _address(processor), SCOPE_LABELS),
            ]
            with prometheus.running(
                base / "prometheus", targets=targets, rule_files=[generate.RULES_FILE]
            ) as server:
                helpers.eventually(
                    lambda: {t["health"] for t in server.targets()}, until=lambda h: h == {"up"}
                )
                started = time.time()
                with (
                    httpx.Client(
                        base_url=api.health_url.removesuffix("/healthz"), timeout=10
                    ) as client,
                    httpx.Client(
                        base_url=api.health_url.removesuffix("/healthz"), timeout=10
                    ) as other,
                ):
                    # Twice: a labelled series is born at its first event, which rate()
                    # cannot see; the second round shows in every rate.
                    first = _drive_mixed_traffic(client, other, sqs_proxy, burst=RATE_LIMIT + 5)
                    assert 202 in first, first
                    time.sleep(3)
                    _drive_mixed_traffic(client, other, sqs_proxy, burst=5)
                dlq = f"{pipeline.queue_name}-dlq"
                helpers.eventually(
                    lambda: helpers.queue_depths(pipeline), until=lambda d: d[dlq] >= 1, timeout=60
                )
                # the processor reports the depth, Prometheus scrapes it and evaluates the rules
                helpers.eventually(
                    lambda: server.query('sum(order_queue_messages{queue="dead-letter"}) > 0'),
                    until=bool,
                    timeout=30,
                )
                time.sleep(3)
                names = sample_names(_metrics_text(api)) | sample_names(_metrics_text(processor))
                yield Observed(server, names, started, base / "png")
        finally:
            api.stop()
            processor.stop()


def _uses_only_operator_metrics(expr: str) -> bool:
    names = promql.metric_names(expr) - BUILT_IN
    return bool(names) and all(name.startswith("orderpipeline_") for name in names)


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def test_prometheus_scrapes_both_services_and_loaded_every_rule(observed: Observed) -> None:
    health = {t["labels"]["job"]: t["health"] for t in observed.server.targets()}
    assert health == {rules.JOBS["api"]: "up", rules.JOBS["processor"]: "up"}
    loaded = {group["name"]: group for group in observed.server.rule_groups()}
    shipped = generate.load_rules()["groups"]
    assert set(loaded) == {group["name"] for group in shipped}
    for group in loaded.values():
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule


@pytest.mark.parametrize(
    "query",
    list(
        promql.panel_queries(generate.load_dashboard(generate.dashboard_path(dashboards.PIPELINE)))
    ),
    ids=lambda q: f"{q.panel}: {q.legend}",
)
def test_every_pipeline_panel_query_returns_labelled_series(
    observed: Observed, query: promql.PanelQuery
) -> None:
    observability_checks.assert_panel_query_answers(observed.server, query)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in generate.load_rules()["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    "rule",
    [r for r in _rules() if "record" in r],
    ids=lambda r: f"{r['record']} {r['labels']['slo']}",
)
def test_every_recording_rule_yields_a_series_and_ratios_stay_within_0_and_1(
    observed: Observed, rule: dict[str, Any]
) -> None:
    values = _values(observed.server.query(rule["expr"]))
    assert values, f"{rule['record']}: no series"
    if ":ratio_" in rule["record"]:
        assert all(0 <= v <= 1 for v in values), values
    else:
        assert all(v > 0 for v in values), values
    # and Prometheus has recorded it, with the pipeline's labels and the SLO's
    recorded = observed.server.query(f'{rule["record"]}{{slo="{rule["labels"]["slo"]}"}}')
    assert recorded
    assert recorded[0]["metric"] | SCOPE_LABELS == recorded[0]["metric"]


@pytest.mark.parametrize(
    "rule",
    [r for r in _rules() if "alert" in r and not _uses_only_operator_metrics(r["expr"])],
    ids=lambda r: r["alert"],
)
def test_every_alert_evaluates_over_series_that_exist(
    observed: Observed, rule: dict[str, Any]
) -> None:
    observed.server.query(rule["expr"])  # no error
    for quantity in promql.compared_quantities(rule["expr"]):
        if _uses_only_operator_metrics(quantity) or quantity.endswith('job="order-operator"}'):
            continue  # no operator runs here; its names are checked below
        assert observed.server.query(quantity), f"{rule['alert']}: nothing for {quantity}"


def test_the_dead_letter_alert_is_under_way(observed: Observed) -> None:
    states = observed.server.query('ALERTS{alertname="OrderDeadLetterQueueNotEmpty"}')
    assert [s["metric"]["alertstate"] for s in states] in (["pending"], ["firing"])
    assert states[0]["metric"]["namespace"] == SCOPE_LABELS["namespace"]


def test_every_metric_name_used_is_exposed_by_a_service(observed: Observed) -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    operator_names = operator_sample_names()
    exposed = observed.service_names | operator_names | recorded | BUILT_IN
    exprs = [r["expr"] for r in _rules()] + [
        promql.substitute_variables(q.expr, rate_window=RATE_WINDOW)
        for spec in dashboards.DASHBOARDS
        for q in promql.panel_queries(generate.load_dashboard(generate.dashboard_path(spec)))
    ]
    used = set().union(*(promql.metric_names(e) for e in exprs))
    assert used - exposed == set()
    # the operator's names are its own, not ones the services happen to share
    operator_used = {n for n in used if n.startswith("orderpipeline_")}
    assert operator_used
    assert operator_used <= operator_names


def test_the_pipeline_dashboard_renders_from_live_results(observed: Observed) -> None:
    dashboard = generate.load_dashboard(generate.dashboard_path(dashboards.PIPELINE))
    target = render.render(
        observed.server,
        dashboard,
        observed.png_dir / f"dashboard-{dashboards.PIPELINE.uid}.png",
        start=observed.started,
        end=time.time(),
        rate_window="15s",
    )
    assert target.stat().st_size > 50_000
    keep = os.environ.get("OBSERVABILITY_PNG_DIR")
    if keep:  # `make dashboards`: the README's picture
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(keep) / target.name)
