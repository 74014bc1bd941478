"""The shipped dashboards and rules against a real Prometheus (Debian's `prometheus`) scraping a
real API and processor on the real engines every second, after mixed traffic: 202s, 4xx, 429s,
503s, a completed, a rejected and a failed order, a message in the DLQ. A canary API and a
canary processor (another version, `ROLLOUT_TRACK=canary`) run beside them on the same queue
and tables, as during a rollout, and get traffic of their own.

Every Pipeline and Rollouts dashboard query and every rule expression runs through Prometheus'
HTTP API: no error, a non-empty result, the labels its legend names, shares within [0, 1]; the
Rollouts panels tell the canary from the stable side. Every metric name a panel or rule uses
(parsed with promql-parser) is one the services expose. The dashboards are rendered to PNGs from
those results (`make dashboards` keeps them: OBSERVABILITY_PNG_DIR).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import parser as exposition

from order_api import ratelimit
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
RELEASES = {"stable": "v1", "canary": "v2"}
"""`track` → `version` of the API and processor processes (APP_VERSION, ROLLOUT_TRACK)."""
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


def _wait_for_a_window_with(*, seconds_left: float) -> None:
    """Sleep into the next rate-limit window unless the current one has `seconds_left`
    (windows are fixed minutes of the wall clock, `ratelimit.WINDOW_SECONDS`)."""
    left = ratelimit.WINDOW_SECONDS - time.time() % ratelimit.WINDOW_SECONDS
    if left < seconds_left:
        time.sleep(left + 0.1)


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


def _drive_canary_traffic(canary: httpx.Client) -> None:
    """Orders through the canary API, all completed, and a 422: no 5xx and no failed order, so
    its error ratios must read 0, not nothing, beside the stable side's. A client of its own:
    the rate limit is per client across the APIs."""
    access = helpers.token(canary, "rollout", "rollout-secret")
    placed = [
        helpers.place(canary, access, helpers.order_body(customer_id=f"k{i}")) for i in range(6)
    ]
    assert (
        canary.post("/v1/orders", json={"items": []}, headers=helpers.auth(access)).status_code
        == 422
    )
    finals = {helpers.wait_final(canary, p["status_url"])["status"] for p in placed}
    assert finals == {"COMPLETED"}


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
        clients={"demo": "demo-secret", "other": "other-secret", "rollout": "rollout-secret"},
    )
    with faultproxy.proxied(pipeline.sqs_endpoint) as sqs_proxy:
        apis = {
            track: local.api_process(
                # the stable API's sends go through the fault proxy (its 503s)
                dataclasses.replace(pipeline, sqs_endpoint=sqs_proxy.endpoint)
                if track == "stable"
                else pipeline,
                local.free_port(),
                base,
                RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
                APP_VERSION=version,
                ROLLOUT_TRACK=track,
            )
            for track, version in RELEASES.items()
        }
        # Both with the default concurrency (as many pollers), so each finishes a fair part of
        # the orders whichever API queued them.
        processors = {
            track: local.processor_process(
                pipeline,
                local.free_port(),
                base,
                QUEUE_DEPTH_INTERVAL_SECONDS="1",
                WAIT_TIME_SECONDS="1",
                APP_VERSION=version,
                ROLLOUT_TRACK=track,
            )
            for track, version in RELEASES.items()
        }
        services = [*apis.values(), *processors.values()]
        api = apis["stable"]
        try:
            for service in services:
                service.start()
            targets = [
                *(
                    prometheus.Target(rules.JOBS["api"], _address(a), SCOPE_LABELS)
                    for a in apis.values()
                ),
                *(
                    prometheus.Target(rules.JOBS["processor"], _address(p), SCOPE_LABELS)
                    for p in processors.values()
                ),
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
                    httpx.Client(
                        base_url=apis["canary"].health_url.removesuffix("/healthz"), timeout=10
                    ) as canary,
                ):
                    # Twice: a labelled series is born at its first event, which rate()
                    # cannot see; the second round shows in every rate. Both rounds expect
                    # `other` refused, so both must fall in one rate-limit window.
                    _wait_for_a_window_with(seconds_left=40)
                    first = _drive_mixed_traffic(client, other, sqs_proxy, burst=RATE_LIMIT + 5)
                    assert 202 in first, first
                    _drive_canary_traffic(canary)
                    time.sleep(3)
                    _drive_mixed_traffic(client, other, sqs_proxy, burst=5)
                    _drive_canary_traffic(canary)
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
                names = set().union(*(sample_names(_metrics_text(s)) for s in services))
                yield Observed(server, names, started, base / "png")
        finally:
            for service in services:
                service.stop()


def _uses_only_operator_metrics(expr: str) -> bool:
    names = promql.metric_names(expr) - BUILT_IN
    return bool(names) and all(name.startswith("orderpipeline_") for name in names)


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def test_prometheus_scrapes_both_releases_of_both_services_and_loaded_every_rule(
    observed: Observed,
) -> None:
    scraped = sorted((t["labels"]["job"], t["health"]) for t in observed.server.targets())
    assert scraped == sorted(
        (job, "up") for job in (rules.JOBS["api"], rules.JOBS["processor"]) for _ in RELEASES
    )
    loaded = {group["name"]: group for group in observed.server.rule_groups()}
    shipped = generate.load_rules()["groups"]
    assert set(loaded) == {group["name"] for group in shipped}
    for group in loaded.values():
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule


LIVE_DASHBOARDS = (dashboards.PIPELINE, dashboards.ROLLOUTS)
"""The dashboards of the API and processor (the operator's is proven in tests/e2e)."""


def _queries(spec: dashboards.Dashboard) -> list[promql.PanelQuery]:
    return list(promql.panel_queries(generate.load_dashboard(generate.dashboard_path(spec))))


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(query, id=f"{spec.uid} {query.panel}: {query.legend}")
        for spec in LIVE_DASHBOARDS
        for query in _queries(spec)
    ],
)
def test_every_pipeline_and_rollouts_panel_query_returns_labelled_series(
    observed: Observed, query: promql.PanelQuery
) -> None:
    observability_checks.assert_panel_query_answers(observed.server, query)


def _live(observed: Observed, query: promql.PanelQuery) -> list[dict[str, Any]]:
    expr = promql.substitute_variables(query.expr, rate_window=RATE_WINDOW)
    return observed.server.query(expr)


def _by_track(result: list[dict[str, Any]]) -> dict[str, float]:
    """One number per track of a by-(track, version) result, each with its own version."""
    assert all(s["metric"]["version"] == RELEASES[s["metric"]["track"]] for s in result), result
    tracks = [s["metric"]["track"] for s in result]
    assert sorted(tracks) == sorted(RELEASES), result
    return {s["metric"]["track"]: float(s["value"][1]) for s in result}


@pytest.mark.parametrize(
    "query",
    [q for q in _queries(dashboards.ROLLOUTS) if "track" in promql.legend_labels(q.legend)],
    ids=lambda q: f"{q.panel}: {q.legend}",
)
def test_every_rollouts_release_panel_shows_the_canary_and_the_stable_side(
    observed: Observed, query: promql.PanelQuery
) -> None:
    result = _live(observed, query)
    releases = {(s["metric"]["track"], s["metric"]["version"]) for s in result}
    assert releases == set(RELEASES.items()), f"{query.panel}: {releases}"
    for track in RELEASES:
        values = [float(s["value"][1]) for s in result if s["metric"]["track"] == track]
        assert any(not math.isnan(v) for v in values), f"{query.panel} {track}: {values}"


def _rollouts_query(panel: str) -> promql.PanelQuery:
    (query,) = (q for q in _queries(dashboards.ROLLOUTS) if q.panel == panel)
    return query


def test_the_rollouts_shares_split_the_traffic_between_the_releases(observed: Observed) -> None:
    for panel in ("Share of client requests", "Share of finished orders"):
        shares = _by_track(_live(observed, _rollouts_query(panel)))
        assert sum(shares.values()) == pytest.approx(1), (panel, shares)
        assert all(0 < share < 1 for share in shares.values()), (panel, shares)


def test_the_rollouts_5xx_ratio_reads_0_for_a_canary_without_errors(observed: Observed) -> None:
    # only the stable API's sends went through the failing proxy
    ratios = _by_track(_live(observed, _rollouts_query("5xx ratio")))
    assert ratios["stable"] > 0
    assert ratios["canary"] == 0


def test_the_rollouts_outcomes_by_producer_show_each_api_versions_orders(
    observed: Observed,
) -> None:
    outcomes = _live(observed, _rollouts_query("Outcomes by producer version"))
    completed = {
        s["metric"]["producer_version"]: float(s["value"][1])
        for s in outcomes
        if s["metric"]["status"] == "COMPLETED"
    }
    assert set(completed) == set(RELEASES.values())
    assert all(rate > 0 for rate in completed.values()), completed
    failed = _live(observed, _rollouts_query("FAILED ratio by producer version"))
    ratios = {s["metric"]["producer_version"]: float(s["value"][1]) for s in failed}
    assert set(ratios) == set(RELEASES.values())
    assert ratios[RELEASES["canary"]] == 0  # every order the canary API queued completed
    # The stable API's failed orders may not show in rate(): each processor's series of them
    # is born at its first one.
    assert 0 <= ratios[RELEASES["stable"]] <= 1


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


@pytest.mark.parametrize("spec", LIVE_DASHBOARDS, ids=lambda d: d.uid)
def test_the_dashboard_renders_from_live_results(
    observed: Observed, spec: dashboards.Dashboard
) -> None:
    dashboard = generate.load_dashboard(generate.dashboard_path(spec))
    target = render.render(
        observed.server,
        dashboard,
        observed.png_dir / f"dashboard-{spec.uid}.png",
        start=observed.started,
        end=time.time(),
        rate_window="15s",
    )
    assert target.stat().st_size > 50_000
    keep = os.environ.get("OBSERVABILITY_PNG_DIR")
    if keep:  # `make dashboards`: the README's picture
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(target, Path(keep) / target.name)
