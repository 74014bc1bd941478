"""The rollout spec: defaults, validation in Python and as CEL, queries it builds."""

from __future__ import annotations

from typing import Any

import promql_parser
import pydantic
import pytest

from order_operator.rollout import spec as rollout_spec
from order_operator.v1alpha1 import crd

ANALYSIS = {"prometheus": {"address": "http://prometheus.monitoring:9090"}}
REVISIONS = rollout_spec.Revisions(canary="c0ffee1234", stable="5ab1e5ab1e")


def test_defaults_step_through_5_25_50_with_pauses_processor_first() -> None:
    rollout = rollout_spec.RolloutSpec()
    assert rollout.model_dump(by_alias=True)["steps"] == [
        {"weight": 5},
        {"pause": {"duration": 120}},
        {"weight": 25},
        {"pause": {"duration": 120}},
        {"weight": 50},
        {"pause": {"duration": 120}},
    ]
    assert rollout.order == ["processor", "api"]
    assert rollout.progress_deadline_seconds == 600
    assert rollout.analysis is None


def test_camel_case_fields_are_read() -> None:
    rollout = rollout_spec.RolloutSpec.model_validate(
        {
            "steps": [{"weight": 10}, {"pause": {}}],
            "progressDeadlineSeconds": 900,
            "apiShareTolerance": 0.25,
            "order": ["api"],
            "analysis": {**ANALYSIS, "intervalSeconds": 30, "failureLimit": 0, "minSamples": 20},
        }
    )
    assert rollout.steps[1].pause == rollout_spec.Pause(duration=None)
    assert (rollout.progress_deadline_seconds, rollout.api_share_tolerance) == (900, 0.25)
    assert rollout.analysis is not None
    assert (rollout.analysis.interval_seconds, rollout.analysis.failure_limit) == (30, 0)
    assert rollout.analysis.min_samples == 20


@pytest.mark.parametrize(
    "step",
    [{}, {"weight": 5, "pause": {}}, {"weight": 0}, {"weight": 101}, {"pause": {"duration": -1}}],
)
def test_a_step_is_exactly_one_weight_in_1_to_100_or_one_pause(step: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        rollout_spec.Step.model_validate(step)


def test_order_may_not_repeat_a_component() -> None:
    with pytest.raises(pydantic.ValidationError, match="twice"):
        rollout_spec.RolloutSpec.model_validate({"order": ["api", "api"]})


def test_deadline_must_be_longer_than_one_analysis_interval() -> None:
    with pytest.raises(pydantic.ValidationError, match="progressDeadlineSeconds"):
        rollout_spec.RolloutSpec.model_validate(
            {"progressDeadlineSeconds": 60, "analysis": {**ANALYSIS, "intervalSeconds": 60}}
        )


def test_weight_in_force_is_the_last_weight_at_or_before_a_step() -> None:
    rollout = rollout_spec.RolloutSpec.model_validate(
        {"steps": [{"pause": {}}, {"weight": 10}, {"pause": {"duration": 5}}, {"weight": 40}]}
    )
    assert [rollout.weight_at(i) for i in range(4)] == [0, 10, 10, 40]


def test_a_series_is_a_query_or_a_metric_not_both() -> None:
    for both_or_none in ({}, {"query": "up", "metric": "up"}):
        with pytest.raises(pydantic.ValidationError):
            rollout_spec.Series.model_validate(both_or_none)


def test_metric_series_sums_the_increase_of_the_track_s_revision_over_the_interval() -> None:
    series = rollout_spec.Series(metric="http_requests_total", matchers='status=~"5.."')
    assert series.promql(track="canary", revisions=REVISIONS, interval_seconds=60) == (
        'sum(increase(http_requests_total{status=~"5..",version="c0ffee1234"}[60s]))'
    )
    bare = rollout_spec.Series(metric="orders_processed_total")
    assert bare.promql(track="stable", revisions=REVISIONS, interval_seconds=30) == (
        'sum(increase(orders_processed_total{version="5ab1e5ab1e"}[30s]))'
    )


def test_query_placeholders_are_replaced_and_promql_braces_kept() -> None:
    series = rollout_spec.Series(
        query='sum(rate(x{track="{track}",version="{version}",a="b"}[{interval}]))'
    )
    assert series.promql(track="stable", revisions=REVISIONS, interval_seconds=120) == (
        'sum(rate(x{track="stable",version="5ab1e5ab1e",a="b"}[120s]))'
    )
    assert series.promql(track="canary", revisions=REVISIONS, interval_seconds=60) == (
        'sum(rate(x{track="canary",version="c0ffee1234",a="b"}[60s]))'
    )


def test_default_checks_judge_each_component_on_its_own_metrics() -> None:
    analysis = rollout_spec.Analysis.model_validate(ANALYSIS)
    api, processor = analysis.checks("api"), analysis.checks("processor")
    assert [c.name for c in api.error_ratios] == ["http-5xx", "produced-orders-failed"]
    assert [c.name for c in processor.error_ratios] == ["orders-failed"]
    assert "http_request_duration_seconds_bucket" in api.latencies[0].query
    assert "order_processing_duration_seconds_bucket" in processor.latencies[0].query
    assert not api.empty
    assert rollout_spec.Checks().empty


def test_default_api_checks_leave_out_probes_and_scrapes() -> None:
    """Every pod answers probes and scrapes: counted, they would reach minSamples for a
    canary no client has reached yet."""
    api = rollout_spec.Analysis.model_validate(ANALYSIS).checks("api")
    ratio = api.error_ratios[0]
    (latency,) = api.latencies
    queries = [
        ratio.errors.promql(track="canary", revisions=REVISIONS, interval_seconds=60),
        ratio.total.promql(track="canary", revisions=REVISIONS, interval_seconds=60),
        latency.samples.promql(track="canary", revisions=REVISIONS, interval_seconds=60),
        rollout_spec.render(
            latency.query, track="canary", revisions=REVISIONS, interval_seconds=60
        ),
    ]
    for query in queries:
        assert 'route!~"/healthz|/readyz|/metrics"' in query, query
        assert 'version="c0ffee1234"' in query, query
    assert queries[0] == (
        'sum(increase(http_requests_total{route!~"/healthz|/readyz|/metrics",status=~"5..",'
        'version="c0ffee1234"}[60s]))'
    )


def test_the_api_is_judged_by_the_failures_of_the_orders_it_produced() -> None:
    """Selected by `producer_version`: the processor's own `version` and `track` are one
    release for the orders of both API tracks. REJECTED is the business saying no."""
    api = rollout_spec.Analysis.model_validate(ANALYSIS).checks("api")
    produced = {c.name: c for c in api.error_ratios}["produced-orders-failed"]
    for track, revision in (("canary", "c0ffee1234"), ("stable", "5ab1e5ab1e")):
        errors = produced.errors.promql(track=track, revisions=REVISIONS, interval_seconds=60)
        total = produced.total.promql(track=track, revisions=REVISIONS, interval_seconds=60)
        assert errors == (
            "sum(increase(orders_processed_by_producer_total"
            f'{{producer_version="{revision}",status="FAILED"}}[60s]))'
        )
        assert total == (
            "sum(increase(orders_processed_by_producer_total"
            f'{{producer_version="{revision}"}}[60s]))'
        )


def test_the_schema_is_structural_with_cel_rules_and_null_free_defaults() -> None:
    """What `OrderPipelineSpec.rollout` will put into the CRD: the same conversion, the CEL
    rules present, and defaults the apiserver accepts (no nulls for absent fields)."""
    schema = crd.structural(rollout_spec.RolloutSpec.model_json_schema(by_alias=True))
    properties = schema["properties"]
    assert "$ref" not in str(schema)
    assert "anyOf" not in str(schema)
    assert "None" not in str(properties["steps"]["default"])
    assert properties["steps"]["items"]["x-kubernetes-validations"][0]["rule"] == (
        "has(self.weight) != has(self.pause)"
    )
    assert schema["x-kubernetes-validations"][0]["rule"].startswith("!has(self.analysis)")
    assert properties["order"]["x-kubernetes-list-type"] == "set"
    checks = properties["analysis"]["properties"]["api"]
    # The apiserver defaults an absent `api` to {} and then its fields: they carry the checks.
    assert checks["properties"]["errorRatios"]["default"][0]["name"] == "http-5xx"


def test_every_schema_default_equals_the_model_default() -> None:
    """Defaulting by the apiserver and by the models agree (same check as the CRD's)."""
    schema = crd.structural(rollout_spec.Analysis.model_json_schema(by_alias=True))
    model = rollout_spec.Analysis.model_validate(ANALYSIS).model_dump(by_alias=True)
    for name, node in schema["properties"].items():
        if "default" in node and node["default"] != {}:
            assert node["default"] == model[name], name
    for name in ("api", "processor"):
        fields = schema["properties"][name]["properties"]
        for field, node in fields.items():
            assert node.get("default", []) == model[name][field], (name, field)


def test_every_default_query_is_valid_promql_for_both_tracks() -> None:
    analysis = rollout_spec.Analysis.model_validate(ANALYSIS)
    for component in rollout_spec.COMPONENTS:
        checks = analysis.checks(component)
        for track in ("canary", "stable"):
            series = [s for c in checks.error_ratios for s in (c.errors, c.total)]
            series += [latency.samples for latency in checks.latencies]
            queries = [
                s.promql(track=track, revisions=REVISIONS, interval_seconds=60) for s in series
            ] + [
                rollout_spec.render(
                    latency.query, track=track, revisions=REVISIONS, interval_seconds=60
                )
                for latency in checks.latencies
            ]
            for query in queries:
                promql_parser.parse(query)
                assert "{track}" not in query
                assert "{version}" not in query
                assert "{interval}" not in query
