"""The PromQL the rollout analysis sends: the default checks and the observed share parse, name
only metrics the services export, and select each track by its revision (their real PromQL
evaluation is in tests/integration/test_rollout_analysis.py)."""

from __future__ import annotations

from types import ModuleType

import prometheus_client
import promql_parser
import pytest

from order_api import metrics as api_metrics
from order_devtools.observability import promql
from order_operator import analysis
from order_operator.rollout import judge
from order_operator.rollout import spec as rollout_spec
from order_processor import metrics as processor_metrics

EXPORTERS: dict[rollout_spec.Component, ModuleType] = {
    "api": api_metrics,
    "processor": processor_metrics,
}
REVISIONS = rollout_spec.Revisions(canary="c0ffee1234", stable="5ab1e5ab1e")
PRODUCED = "orders_processed_by_producer_total"
"""Exported by the processor, counted by the API's revision (`producer_version`)."""
_SAMPLES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


def exported_names(module: ModuleType) -> set[str]:
    """The sample names a service's metrics module exposes, labelled or not yet used."""
    registry = prometheus_client.CollectorRegistry()
    for value in vars(module).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            registry.register(value)
    return {
        family.name + suffix for family in registry.collect() for suffix in _SAMPLES[family.type]
    }


def sent_queries(component: rollout_spec.Component, track: rollout_spec.Track) -> list[str]:
    """Every query the analysis sends for a component's default checks and its share."""
    checks = rollout_spec.Analysis.model_validate(
        {"prometheus": {"address": "http://prometheus:9090"}}
    ).checks(component)
    series = [s for c in checks.error_ratios for s in (c.errors, c.total)]
    series += [latency.samples for latency in checks.latencies]
    series.append(analysis.SHARE_SERIES[component])
    queries = [s.promql(track=track, revisions=REVISIONS, interval_seconds=60) for s in series]
    queries += [
        rollout_spec.render(latency.query, track=track, revisions=REVISIONS, interval_seconds=360)
        for latency in checks.latencies
    ]
    queries += [
        rollout_spec.render(g.query, track=track, revisions=REVISIONS, interval_seconds=60)
        for g in checks.gates
    ]
    return queries


def scoping_labels(selector: promql_parser.VectorSelector, revision: str) -> set[str]:
    """The labels a selector requires to equal the revision."""
    return {
        m.name
        for m in selector.matchers.matchers
        if m.op == promql_parser.MatchOp.Equal and m.value == revision
    }


@pytest.mark.parametrize("component", rollout_spec.COMPONENTS)
@pytest.mark.parametrize("track", ["canary", "stable"])
def test_every_default_query_parses_names_exported_metrics_and_selects_the_track_s_revision(
    component: rollout_spec.Component, track: rollout_spec.Track
) -> None:
    """Scoped by the revision, which is unique to one pipeline: by `track` alone, two
    pipelines in one Prometheus would add up."""
    exported = exported_names(EXPORTERS[component])
    revision = REVISIONS.of(track)
    for query in sent_queries(component, track):
        selectors = promql.selectors(query)
        assert selectors, query
        for selector in selectors:
            if selector.name == PRODUCED:
                # The processor's count of the orders this API revision produced.
                assert component == "api", query
                assert selector.name in exported_names(processor_metrics)
                assert scoping_labels(selector, revision) == {"producer_version"}, query
            else:
                assert selector.name in exported, query
                assert scoping_labels(selector, revision) == {"version"}, query
        assert "track=" not in query


def test_the_api_is_judged_by_what_the_processor_made_of_its_orders() -> None:
    queries = sent_queries("api", "canary")
    assert any(PRODUCED in query and 'status="FAILED"' in query for query in queries)
    assert PRODUCED in exported_names(processor_metrics)
    assert PRODUCED not in exported_names(api_metrics)


def test_the_exported_names_are_read_from_the_services() -> None:
    # Guards the check above against a helper that would accept anything.
    assert "http_requests_total" in exported_names(api_metrics)
    assert "http_requests_total" not in exported_names(processor_metrics)
    assert "order_processing_duration_seconds_bucket" in exported_names(processor_metrics)


def test_the_share_counts_what_the_default_error_ratios_count() -> None:
    """Client requests for the API (probes and scrapes reach every pod whatever its weight),
    finished orders for the processor."""
    defaults: dict[rollout_spec.Component, rollout_spec.Checks] = {
        "api": rollout_spec.ApiChecks(),
        "processor": rollout_spec.ProcessorChecks(),
    }
    for component, checks in defaults.items():
        assert analysis.SHARE_SERIES[component] == checks.error_ratios[0].total


def test_a_latency_measure_shows_the_window_it_was_read_over() -> None:
    checks = rollout_spec.ApiChecks()
    reading = judge.LatencyReading(0.1, 0.1, 500, 500)
    readings = judge.Readings(latencies={"http-p99": reading})
    over_window = judge.judge(
        checks,
        readings,
        min_samples=100,
        revisions=REVISIONS,
        interval_seconds=60,
        window_seconds=360,
    )
    one_interval = judge.judge(
        checks, readings, min_samples=100, revisions=REVISIONS, interval_seconds=60
    )
    latency = {m.kind: m for m in over_window.measures}["latency"]
    assert "[360s]" in latency.query
    assert "[60s]" in {m.kind: m for m in one_interval.measures}["latency"].query
